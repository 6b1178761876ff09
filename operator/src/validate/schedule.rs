//! The data feed's schedule, parsed as the CronJob controller will.

/// A schedule the CronJob controller accepts (the rules of its parser, robfig/cron's standard
/// one): a macro, or five cron fields whose values are within their ranges. The CRD's pattern
/// checks the shape only.
pub fn is_schedule(schedule: &str) -> bool {
    const MACROS: &[&str] = &[
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ];
    const MONTHS: &[&str] = &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    if MACROS.contains(&schedule) {
        return true;
    }
    // (lowest, highest, names numbered from `lowest`)
    let fields: [(u32, u32, &[&str]); 5] = [
        (0, 59, &[]),
        (0, 23, &[]),
        (1, 31, &[]),
        (1, 12, MONTHS),
        (0, 6, DAYS),
    ];
    let parts: Vec<&str> = schedule
        .split(' ')
        .filter(|part| !part.is_empty())
        .collect();
    parts.len() == fields.len()
        && !schedule.starts_with(' ')
        && parts.iter().zip(fields).all(|(part, (low, high, names))| {
            part.split(',')
                .all(|item| is_cron_item(item, low, high, names))
        })
}

fn is_cron_item(item: &str, low: u32, high: u32, names: &[&str]) -> bool {
    let value = |text: &str| -> Option<u32> {
        if let Some(position) = names
            .iter()
            .position(|name| name.eq_ignore_ascii_case(text))
        {
            return Some(low + position as u32);
        }
        let number: u32 = text
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| text.parse().ok())
            .flatten()?;
        (low..=high).contains(&number).then_some(number)
    };
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (item, None),
    };
    let step_ok = step.is_none_or(|step| {
        step.bytes().all(|b| b.is_ascii_digit()) && step.parse::<u32>().is_ok_and(|step| step >= 1)
    });
    let range_ok = match range {
        "*" | "?" => true,
        _ => match range.split_once('-') {
            Some((first, last)) => {
                matches!((value(first), value(last)), (Some(a), Some(b)) if a <= b)
            }
            None => value(range).is_some(),
        },
    };
    step_ok && range_ok
}
