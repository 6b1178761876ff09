//! Reading a rules file (YAML or JSON) into a compiled rule set.
//!
//! Deserialisation goes through `serde_path_to_error` so a mistyped or misplaced key is
//! reported with where it is (`velocity: unknown field `maxCnt``), and the compiled checks
//! then name the key of any bad value. The file is read once at start-up: a changed ConfigMap
//! takes effect when the pods restart, so every replica decides with the same version.

use std::path::Path;

use paysys_core::risk_rules::RiskRules;

use super::{CompiledRules, RulesError, compile};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// By extension; without a known one (a ConfigMap key is often just `rules`), a document
    /// starting with `{` is JSON and anything else YAML.
    pub fn detect(path: &Path, text: &str) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            Some(e) if e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml") => {
                Format::Yaml
            }
            _ if text.trim_start().starts_with('{') => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Reads, parses and validates the rules file at `path`.
pub fn load_file(path: &Path) -> Result<CompiledRules, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    parse(&text, Format::detect(path, &text)).map_err(|e| e.to_string())
}

/// Parses and validates a rules document.
pub fn parse(text: &str, format: Format) -> Result<CompiledRules, RulesError> {
    if text.trim().is_empty() {
        return Err(RulesError::new(
            "(file)",
            "is empty; write {} for the default rules",
        ));
    }
    let raw: RiskRules = match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| located(e.path(), e.inner()))?
        }
        Format::Yaml => {
            let de = serde_norway::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| located(e.path(), e.inner()))?
        }
    };
    compile(&raw)
}

fn located(path: &serde_path_to_error::Path, error: &impl std::fmt::Display) -> RulesError {
    let path = path.to_string();
    let mut message = error.to_string();
    // serde_norway already prefixes its message with the enclosing mapping's path
    // ("velocity: unknown field ..."); drop that so the path is not said twice.
    let segments: Vec<&str> = path.split('.').collect();
    for end in (1..=segments.len()).rev() {
        let prefix = format!("{}: ", segments[..end].join("."));
        if let Some(rest) = message.strip_prefix(&prefix) {
            message = rest.to_owned();
            break;
        }
    }
    // The root is rendered as "."; say "(file)" so the message reads naturally.
    let path = if path == "." { "(file)".into() } else { path };
    RulesError::new(path, message)
}

#[cfg(test)]
mod tests {
    use paysys_core::risk_rules::RuleId;

    use super::*;

    const YAML: &str = r#"
version: "2026-11-01"
declineThreshold: 100
allowedCurrencies: [USD, EUR, JPY]
maxAmount:
  USD: "10000"
  JPY: "1500000"
blockedUserIds: ["00000000-0000-0000-0000-000000000001"]
velocity:
  windowSeconds: 3600
  maxCount: 10
  maxTotal:
    USD: "20000.00"
scores:
  velocityCount: 50
"#;

    #[test]
    fn reads_yaml_and_json() {
        let rules = parse(YAML, Format::Yaml).unwrap();
        assert_eq!(rules.version, "2026-11-01");
        assert_eq!(rules.scores().get(RuleId::VelocityCount), 50);
        // Unset scores keep their defaults.
        assert_eq!(rules.scores().get(RuleId::VelocityTotal), 60);
        let json = r#"{"version": "j1", "maxAmount": {"EUR": "5.50"}}"#;
        let rules = parse(json, Format::Json).unwrap();
        assert_eq!(rules.version, "j1");
        assert_eq!(parse("{}", Format::Json).unwrap(), CompiledRules::default());
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let error = parse(
            "velocity:\n  windowSeconds: 60\n  maxCnt: 3\n",
            Format::Yaml,
        )
        .unwrap_err();
        assert_eq!(error.path, "velocity.maxCnt");
        assert!(
            error.message.starts_with("unknown field `maxCnt`"),
            "{error}"
        );
        let error = parse(r#"{"maxAmmount": {}}"#, Format::Json).unwrap_err();
        assert_eq!(error.path, "maxAmmount");
        assert!(error.message.contains("maxAmmount"), "{error}");
    }

    #[test]
    fn unknown_and_repeated_score_keys_are_refused() {
        let error = parse("scores:\n  velocityCnt: 10\n", Format::Yaml).unwrap_err();
        assert_eq!(error.path, "scores.velocityCnt");
        assert!(
            error
                .message
                .starts_with("unknown field `velocityCnt`, expected one of `currencyNotAllowed`"),
            "{error}"
        );
        let error = parse(
            r#"{"scores": {"blockedUser": 10, "blockedUser": 20}}"#,
            Format::Json,
        )
        .unwrap_err();
        assert!(
            error.message.starts_with("duplicate field `blockedUser`"),
            "{error}"
        );
        let error = parse(r#"{"scores": {"blockedUser": -1}}"#, Format::Json).unwrap_err();
        assert_eq!(error.path, "scores.blockedUser");
    }

    #[test]
    fn mistyped_values_are_named_with_their_path() {
        let error = parse(
            r#"{"blockedUserIds": ["00000000-0000-0000-0000-000000000001", "bob"]}"#,
            Format::Json,
        )
        .unwrap_err();
        assert_eq!(error.path, "blockedUserIds[1]");
        let error = parse("declineThreshold: high\n", Format::Yaml).unwrap_err();
        assert_eq!(error.path, "declineThreshold");
        let error = parse("maxAmount:\n  USD: \"1.001\"\n", Format::Yaml).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"maxAmount.USD: "1.001" has more decimals than USD allows (2)"#
        );
    }

    #[test]
    fn empty_and_broken_files_are_refused() {
        assert_eq!(parse("  \n", Format::Yaml).unwrap_err().path, "(file)");
        assert!(parse("{not json", Format::Json).is_err());
        assert!(parse("- a list\n", Format::Yaml).is_err());
    }

    #[test]
    fn format_follows_the_extension_then_the_content() {
        assert_eq!(Format::detect(Path::new("r.json"), ""), Format::Json);
        assert_eq!(Format::detect(Path::new("r.YML"), "{}"), Format::Yaml);
        assert_eq!(Format::detect(Path::new("rules"), " {}"), Format::Json);
        assert_eq!(
            Format::detect(Path::new("rules"), "version: x"),
            Format::Yaml
        );
    }

    #[test]
    fn load_file_reports_unreadable_files() {
        let error = load_file(Path::new("/nonexistent/rules.yaml")).unwrap_err();
        assert!(error.starts_with("cannot read"), "{error}");
    }
}
