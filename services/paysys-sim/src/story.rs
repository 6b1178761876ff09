//! The generative story: who pays whom, how much, when, and which payments are fraud.
//!
//! A seed gives one story, the same on every machine ([`Xoshiro256PlusPlus`] is a fixed
//! algorithm, and every draw happens in a fixed order). The story knows nothing about the risk engine: whether a
//! payment is approved, and so whether its planned dispute is filed, is decided later by the
//! same code that serves (history mode) or by the running services (live mode).
//! docs/simulator.md describes the story and every parameter with its default.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
pub use paysys_core::DisputeReason;
use paysys_core::{Currency, Money};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use uuid::Uuid;

/// Currencies of payers: ISO code, share of payers, units per US dollar (amounts are drawn
/// in dollars and converted, so a euro payer's habits look like a dollar payer's).
pub const CURRENCIES: [(&str, f64, f64); 4] = [
    ("USD", 0.45, 1.0),
    ("EUR", 0.30, 0.92),
    ("GBP", 0.15, 0.79),
    ("JPY", 0.10, 150.0),
];

/// No generated amount exceeds this many dollars (a bound on the log-normal's tail).
const MAX_AMOUNT_USD: f64 = 100_000.0;

/// What a payment really is (the truth file's `pattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    Legit,
    /// Bursts of small amounts on a fresh payment method, seconds apart.
    CardTesting,
    /// An established payer suddenly pays a new payee an unusual amount at an unusual hour.
    AccountTakeover,
    /// A group of fresh payers all paying one fresh payee.
    Ring,
}

impl Pattern {
    pub const ALL: [Pattern; 4] = [
        Self::Legit,
        Self::CardTesting,
        Self::AccountTakeover,
        Self::Ring,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legit => "legit",
            Self::CardTesting => "card_testing",
            Self::AccountTakeover => "account_takeover",
            Self::Ring => "ring",
        }
    }

    pub fn is_fraud(self) -> bool {
        self != Self::Legit
    }
}

/// A dispute the payer will file if the payment is approved (a declined payment never
/// executed, so nobody disputes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedDispute {
    pub reason: DisputeReason,
    /// After the payment's creation.
    pub after: TimeDelta,
}

/// An inclusive range of a parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Between<T> {
    pub min: T,
    pub max: T,
}

const fn between<T>(min: T, max: T) -> Between<T> {
    Between { min, max }
}

/// Every knob of the story. `Default` is the documented story (docs/simulator.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Legitimate payments per payer on average: sets the number of payers.
    pub payments_per_payer: f64,
    /// Payments per payee (merchant) on average: sets the number of payees.
    pub payments_per_payee: f64,
    /// Payee popularity is Zipf-like: the payee of rank r has weight 1 / r^exponent.
    pub payee_popularity_exponent: f64,
    /// Payers' activity weights are log-normal with this sigma (a few payers pay a lot).
    pub activity_sigma: f64,
    /// Median over payers of a payer's median amount, in dollars.
    pub median_amount_usd: f64,
    /// Log-normal sigma of payers' median amounts around `median_amount_usd`.
    pub payer_median_sigma: f64,
    /// Log-normal sigma of one payer's amounts around its own median.
    pub amount_sigma: f64,
    /// Standard deviation, in hours, of a payer's payment times around its preferred hour.
    pub hour_spread: f64,
    /// Payment methods a payer holds.
    pub methods_per_payer: Between<u32>,
    /// Usual payees a payer has.
    pub usual_payees: Between<u32>,
    /// Share of a payer's payments that go to a usual payee (the rest: any payee, by
    /// popularity).
    pub usual_payee_share: f64,
    pub card_testing: CardTesting,
    pub account_takeover: AccountTakeover,
    pub ring: Ring,
    pub disputes: Disputes,
    /// Time from a payment's creation to its decision (history mode's `decided_at`).
    pub decision_latency_ms: Between<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CardTesting {
    /// Share of all payments.
    pub share: f64,
    /// Payments per burst.
    pub burst: Between<u32>,
    /// Seconds between two payments of a burst.
    pub gap_seconds: Between<f64>,
    /// Amount of each, in dollars.
    pub amount_usd: Between<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountTakeover {
    pub share: f64,
    /// Payments per takeover.
    pub payments: Between<u32>,
    /// The amount as a multiple of the payer's median.
    pub amount_factor: Between<f64>,
    /// Probability that the takeover adds a new payment method.
    pub new_method_probability: f64,
    /// Seconds between two payments of a takeover.
    pub gap_seconds: Between<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ring {
    pub share: f64,
    /// Fresh payers in a ring.
    pub members: Between<u32>,
    /// Payments per member.
    pub payments_per_member: Between<u32>,
    /// Median amount in dollars (log-normal, sigma 0.4).
    pub median_amount_usd: f64,
    /// How long a ring is active, in hours.
    pub active_hours: Between<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Disputes {
    /// Share of fraudulent payments whose (approved) payment gets disputed.
    pub fraud_rate: f64,
    /// Of those, the share with reason `unrecognized` (the rest: `fraudulent`).
    pub fraud_unrecognized_share: f64,
    /// Share of legitimate payments disputed anyway (noise).
    pub noise_rate: f64,
    /// Noise reasons and their weights: friendly fraud is a legitimate payment disputed as
    /// `fraudulent`.
    pub noise_reasons: [(DisputeReason, f64); 4],
    /// Days from payment to dispute.
    pub delay_days: Between<f64>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            payments_per_payer: 20.0,
            payments_per_payee: 100.0,
            payee_popularity_exponent: 1.1,
            activity_sigma: 1.0,
            median_amount_usd: 30.0,
            payer_median_sigma: 0.8,
            amount_sigma: 0.5,
            hour_spread: 2.5,
            methods_per_payer: between(1, 3),
            usual_payees: between(2, 8),
            usual_payee_share: 0.8,
            card_testing: CardTesting {
                share: 0.004,
                burst: between(8, 25),
                gap_seconds: between(2.0, 40.0),
                amount_usd: between(0.5, 3.0),
            },
            account_takeover: AccountTakeover {
                share: 0.003,
                payments: between(1, 4),
                amount_factor: between(5.0, 15.0),
                new_method_probability: 0.5,
                gap_seconds: between(60.0, 600.0),
            },
            ring: Ring {
                share: 0.003,
                members: between(5, 12),
                payments_per_member: between(1, 3),
                median_amount_usd: 250.0,
                active_hours: between(1.0, 48.0),
            },
            disputes: Disputes {
                fraud_rate: 1.0,
                fraud_unrecognized_share: 0.3,
                noise_rate: 0.004,
                noise_reasons: [
                    (DisputeReason::ProductNotReceived, 0.4),
                    (DisputeReason::Duplicate, 0.2),
                    (DisputeReason::Other, 0.2),
                    (DisputeReason::Fraudulent, 0.2),
                ],
                delay_days: between(1.0, 20.0),
            },
            decision_latency_ms: between(5, 200),
        }
    }
}

impl Params {
    /// The shares of the fraud patterns, by pattern.
    pub fn share(&self, pattern: Pattern) -> f64 {
        match pattern {
            Pattern::Legit => 1.0 - self.fraud_share(),
            Pattern::CardTesting => self.card_testing.share,
            Pattern::AccountTakeover => self.account_takeover.share,
            Pattern::Ring => self.ring.share,
        }
    }

    fn fraud_share(&self) -> f64 {
        self.card_testing.share + self.account_takeover.share + self.ring.share
    }

    /// The exact number of payments of `pattern` in a story of `payments`.
    pub fn count(&self, pattern: Pattern, payments: u64) -> u64 {
        let fraud = |share: f64| (share * payments as f64).round() as u64;
        match pattern {
            Pattern::Legit => {
                payments
                    - [
                        Pattern::CardTesting,
                        Pattern::AccountTakeover,
                        Pattern::Ring,
                    ]
                    .into_iter()
                    .map(|p| self.count(p, payments))
                    .sum::<u64>()
            }
            other => fraud(self.share(other)),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct StoryConfig {
    pub seed: u64,
    pub payments: u64,
    /// First simulated day (UTC).
    pub start: NaiveDate,
    pub days: u32,
    pub params: Params,
}

/// One payment of the story.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The id history mode gives the payment (live mode: the API gives its own).
    pub payment_id: Uuid,
    /// Creation time: strictly increasing over the whole story.
    pub at: DateTime<Utc>,
    /// Indexes into [`Story::payers`], [`Story::payees`], [`Story::methods`].
    pub payer: u32,
    pub payee: u32,
    pub method: u32,
    pub money: Money,
    pub pattern: Pattern,
    /// Filed only if the payment is approved.
    pub dispute: Option<PlannedDispute>,
    pub decision_latency: TimeDelta,
}

/// A generated story: the parties and the payments in time order.
#[derive(Debug, Clone)]
pub struct Story {
    pub payers: Vec<Uuid>,
    pub payees: Vec<Uuid>,
    pub methods: Vec<Uuid>,
    pub events: Vec<Event>,
    pub start: DateTime<Utc>,
    /// End of the simulated period (exclusive): `start + days`.
    pub end: DateTime<Utc>,
}

impl Story {
    pub fn user_id(&self, event: &Event) -> Uuid {
        self.payers[event.payer as usize]
    }

    pub fn payee_id(&self, event: &Event) -> Uuid {
        self.payees[event.payee as usize]
    }

    pub fn payment_method_id(&self, event: &Event) -> Uuid {
        self.methods[event.method as usize]
    }
}

/// A legitimate payer's habits.
struct Profile {
    currency: usize,
    /// Median amount in dollars.
    median_usd: f64,
    preferred_hour: f64,
    methods: Vec<u32>,
    usual_payees: Vec<u32>,
}

/// Why a configuration cannot make a story.
pub fn validate(config: &StoryConfig) -> anyhow::Result<()> {
    let p = &config.params;
    anyhow::ensure!(config.payments > 0, "--payments must be at least 1");
    anyhow::ensure!(config.days > 0, "--days must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&p.fraud_share()),
        "the fraud patterns' shares add up to {}, more than all payments",
        p.fraud_share()
    );
    for (name, share) in [
        ("card testing", p.card_testing.share),
        ("account takeover", p.account_takeover.share),
        ("ring", p.ring.share),
    ] {
        anyhow::ensure!(share >= 0.0, "the {name} share must not be negative");
    }
    Ok(())
}

/// The draws of a story, in one place so their order (and so the story) is fixed.
struct Draw {
    rng: Xoshiro256PlusPlus,
}

impl Draw {
    fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    fn between_f(&mut self, range: Between<f64>) -> f64 {
        range.min + (range.max - range.min) * self.uniform()
    }

    fn between_u(&mut self, range: Between<u32>) -> u32 {
        self.rng.random_range(range.min..=range.max.max(range.min))
    }

    fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// An index drawn with the weights whose running sums are `cumulative`.
    fn weighted(&mut self, cumulative: &[f64]) -> usize {
        let total = *cumulative.last().expect("weights");
        let x = self.uniform() * total;
        cumulative
            .partition_point(|&c| c <= x)
            .min(cumulative.len() - 1)
    }

    /// A time uniformly inside `[from, to)`, in whole microseconds (PostgreSQL's precision).
    fn time_in(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> DateTime<Utc> {
        let span = (to - from).num_microseconds().unwrap_or(0).max(1);
        from + TimeDelta::microseconds(self.rng.random_range(0..span))
    }

    fn seconds(&mut self, range: Between<f64>) -> TimeDelta {
        TimeDelta::microseconds((self.between_f(range) * 1e6) as i64)
    }
}

fn running_sums(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    weights
        .scan(0.0, |sum, w| {
            *sum += w;
            Some(*sum)
        })
        .collect()
}

fn currency(index: usize) -> Currency {
    CURRENCIES[index].0.parse().expect("a valid currency")
}

/// `usd` dollars in currency `index`, rounded to its minor unit, at least one minor unit.
fn money(usd: f64, index: usize) -> Money {
    let currency = currency(index);
    let major = usd.min(MAX_AMOUNT_USD) * CURRENCIES[index].2;
    let minor = (major * 10f64.powi(currency.exponent() as i32)).round() as i64;
    Money {
        minor: minor.max(1),
        currency,
    }
}

/// Clamps a time into the simulated period.
fn inside(at: DateTime<Utc>, start: DateTime<Utc>, end: DateTime<Utc>) -> DateTime<Utc> {
    at.clamp(start, end - TimeDelta::microseconds(1))
}

impl Story {
    pub fn generate(config: &StoryConfig) -> anyhow::Result<Story> {
        validate(config)?;
        let p = &config.params;
        let mut draw = Draw {
            rng: Xoshiro256PlusPlus::seed_from_u64(config.seed),
        };
        let start = config.start.and_time(chrono::NaiveTime::MIN).and_utc();
        let end = start + TimeDelta::days(i64::from(config.days));
        let n = config.payments;
        let legit_count = p.count(Pattern::Legit, n);

        // The population.
        let currency_weights = running_sums(CURRENCIES.iter().map(|c| c.1));
        let payee_count = ((n as f64 / p.payments_per_payee).ceil() as usize).max(1);
        let payees: Vec<Uuid> = (0..payee_count).map(|_| draw.uuid()).collect();
        let popularity = running_sums(
            (1..=payee_count).map(|rank| (rank as f64).powf(-p.payee_popularity_exponent)),
        );
        let payer_count = ((legit_count as f64 / p.payments_per_payer).ceil() as usize).max(1);
        let mut payers = Vec::with_capacity(payer_count);
        let mut methods = Vec::new();
        let mut profiles = Vec::with_capacity(payer_count);
        let mut activity = Vec::with_capacity(payer_count);
        for _ in 0..payer_count {
            payers.push(draw.uuid());
            let held = draw.between_u(p.methods_per_payer).max(1);
            let own_methods = (0..held)
                .map(|_| {
                    methods.push(draw.uuid());
                    (methods.len() - 1) as u32
                })
                .collect();
            let usual = draw.between_u(p.usual_payees).max(1);
            profiles.push(Profile {
                currency: draw.weighted(&currency_weights),
                median_usd: draw.log_normal(p.median_amount_usd, p.payer_median_sigma),
                preferred_hour: 24.0 * draw.uniform(),
                methods: own_methods,
                usual_payees: (0..usual)
                    .map(|_| draw.weighted(&popularity) as u32)
                    .collect(),
            });
            activity.push(draw.log_normal(1.0, p.activity_sigma));
        }
        let activity = running_sums(activity.into_iter());

        let mut events: Vec<Event> = Vec::with_capacity(n as usize);
        let plan = |draw: &mut Draw, pattern: Pattern| -> Option<PlannedDispute> {
            let d = &p.disputes;
            let reason = if pattern.is_fraud() {
                draw.chance(d.fraud_rate).then(|| {
                    if draw.chance(d.fraud_unrecognized_share) {
                        DisputeReason::Unrecognized
                    } else {
                        DisputeReason::Fraudulent
                    }
                })
            } else {
                draw.chance(d.noise_rate).then(|| {
                    let weights = running_sums(d.noise_reasons.iter().map(|r| r.1));
                    d.noise_reasons[draw.weighted(&weights)].0
                })
            }?;
            let days = draw.between_f(d.delay_days);
            Some(PlannedDispute {
                reason,
                after: TimeDelta::microseconds((days * 86_400e6) as i64),
            })
        };
        let event = |draw: &mut Draw,
                     at: DateTime<Utc>,
                     (payer, payee, method): (u32, u32, u32),
                     money: Money,
                     pattern: Pattern| Event {
            payment_id: Uuid::nil(),
            at,
            payer,
            payee,
            method,
            money,
            pattern,
            dispute: plan(draw, pattern),
            decision_latency: TimeDelta::milliseconds(
                draw.rng
                    .random_range(p.decision_latency_ms.min..=p.decision_latency_ms.max),
            ),
        };

        // Legitimate payments: a payer by activity, a day, an hour near the payer's own, a
        // usual payee most of the time, one of the payer's methods, an amount near its median.
        for _ in 0..legit_count {
            let payer = draw.weighted(&activity);
            let profile = &profiles[payer];
            let day = draw.below(config.days as usize) as i64;
            let hour = (profile.preferred_hour + p.hour_spread * draw.normal()).rem_euclid(24.0);
            let at =
                start + TimeDelta::days(day) + TimeDelta::microseconds((hour * 3_600e6) as i64);
            let payee = if draw.chance(p.usual_payee_share) {
                profile.usual_payees[draw.below(profile.usual_payees.len())]
            } else {
                draw.weighted(&popularity) as u32
            };
            let method = profile.methods[draw.below(profile.methods.len())];
            let usd = draw.log_normal(profile.median_usd, p.amount_sigma);
            let e = event(
                &mut draw,
                inside(at, start, end),
                (payer as u32, payee, method),
                money(usd, profile.currency),
                Pattern::Legit,
            );
            events.push(e);
        }
        let legit_events = events.len();

        // Account takeover: after one of an established payer's payments, on a later day at
        // the payer's opposite hour, payments to a payee it never used, of several times its
        // median, sometimes with a method added by the attacker.
        let takeover = &p.account_takeover;
        let mut remaining = p.count(Pattern::AccountTakeover, n);
        while remaining > 0 && legit_events > 0 {
            let anchor = &events[draw.below(legit_events)];
            let (payer, anchor_at) = (anchor.payer, anchor.at);
            let profile = &profiles[payer as usize];
            let later_days = 1 + draw.below(3) as i64;
            let hour = (profile.preferred_hour + 12.0 + draw.normal()).rem_euclid(24.0);
            let day_start = anchor_at
                .date_naive()
                .and_time(chrono::NaiveTime::MIN)
                .and_utc();
            let mut at = inside(
                day_start
                    + TimeDelta::days(later_days)
                    + TimeDelta::microseconds((hour * 3_600e6) as i64),
                start,
                end,
            );
            let mut payee = draw.below(payee_count) as u32;
            for _ in 0..10 {
                if !profile.usual_payees.contains(&payee) {
                    break;
                }
                payee = draw.below(payee_count) as u32;
            }
            let method = if draw.chance(takeover.new_method_probability) {
                methods.push(draw.uuid());
                (methods.len() - 1) as u32
            } else {
                profile.methods[draw.below(profile.methods.len())]
            };
            let (median, currency_index) = (profile.median_usd, profile.currency);
            let k = u64::from(draw.between_u(takeover.payments)).min(remaining);
            for _ in 0..k {
                let usd = median * draw.between_f(takeover.amount_factor);
                let e = event(
                    &mut draw,
                    inside(at, start, end),
                    (payer, payee, method),
                    money(usd, currency_index),
                    Pattern::AccountTakeover,
                );
                events.push(e);
                at += draw.seconds(takeover.gap_seconds);
            }
            remaining -= k;
        }

        // Card testing: a fresh account with a fresh payment method tries many small amounts
        // at one merchant within minutes.
        let testing = &p.card_testing;
        let mut remaining = p.count(Pattern::CardTesting, n);
        while remaining > 0 {
            payers.push(draw.uuid());
            methods.push(draw.uuid());
            let (payer, method) = ((payers.len() - 1) as u32, (methods.len() - 1) as u32);
            let currency_index = draw.weighted(&currency_weights);
            let payee = draw.weighted(&popularity) as u32;
            let mut at = draw.time_in(start, end);
            let k = u64::from(draw.between_u(testing.burst)).min(remaining);
            for _ in 0..k {
                let usd = draw.between_f(testing.amount_usd);
                let e = event(
                    &mut draw,
                    inside(at, start, end),
                    (payer, payee, method),
                    money(usd, currency_index),
                    Pattern::CardTesting,
                );
                events.push(e);
                at += draw.seconds(testing.gap_seconds);
            }
            remaining -= k;
        }

        // A ring: fresh payers, each with a fresh method, pay one fresh payee over hours.
        let ring = &p.ring;
        let mut remaining = p.count(Pattern::Ring, n);
        let mut payees = payees;
        while remaining > 0 {
            payees.push(draw.uuid());
            let payee = (payees.len() - 1) as u32;
            let currency_index = draw.weighted(&currency_weights);
            let from = draw.time_in(start, end);
            let until = from
                + draw.seconds(Between {
                    min: ring.active_hours.min * 3600.0,
                    max: ring.active_hours.max * 3600.0,
                });
            let members = draw.between_u(ring.members);
            for _ in 0..members {
                if remaining == 0 {
                    break;
                }
                payers.push(draw.uuid());
                methods.push(draw.uuid());
                let (payer, method) = ((payers.len() - 1) as u32, (methods.len() - 1) as u32);
                let k = u64::from(draw.between_u(ring.payments_per_member)).min(remaining);
                for _ in 0..k {
                    let at = inside(draw.time_in(from, until), start, end);
                    let usd = draw.log_normal(ring.median_amount_usd, 0.4);
                    let e = event(
                        &mut draw,
                        at,
                        (payer, payee, method),
                        money(usd, currency_index),
                        Pattern::Ring,
                    );
                    events.push(e);
                }
                remaining -= k;
            }
        }

        // Time order, creation times strictly increasing (so per payer too, as the API
        // guarantees): from the end backwards, a payment not before its successor moves 1 µs
        // before it (so payments clamped to the end of the period stay inside it). Then ids,
        // in time order.
        events.sort_by_key(|e| e.at);
        let mut limit = end - TimeDelta::microseconds(1);
        for e in events.iter_mut().rev() {
            e.at = e.at.min(limit);
            limit = e.at - TimeDelta::microseconds(1);
        }
        for e in &mut events {
            e.payment_id = draw.uuid();
        }
        Ok(Story {
            payers,
            payees,
            methods,
            events,
            start,
            end,
        })
    }
}
