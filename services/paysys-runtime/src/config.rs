//! Reading configuration from environment variables, with errors that name the variable.

use std::fmt::Display;
use std::str::FromStr;

/// A configuration problem, reported at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {name}: {message}")]
pub struct ConfigError {
    pub name: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(name: &str, message: impl Display) -> Self {
        Self {
            name: name.to_owned(),
            message: message.to_string(),
        }
    }
}

/// Where configuration comes from: the process environment in production, a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct Env;

impl Source for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Source for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

/// A variable's value; an empty value counts as unset.
pub fn optional(source: &dyn Source, name: &str) -> Option<String> {
    source.get(name).filter(|value| !value.trim().is_empty())
}

/// A variable that must be set.
pub fn required(source: &dyn Source, name: &str) -> Result<String, ConfigError> {
    optional(source, name).ok_or_else(|| ConfigError::new(name, "must be set"))
}

/// A variable parsed as `T`, or `default` when unset.
pub fn parse_or<T>(source: &dyn Source, name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match optional(source, name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e| ConfigError::new(name, format!("cannot parse '{}': {e}", raw.trim()))),
    }
}

/// The URL with any password replaced, for logs and errors (database and broker URLs).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable url>".into();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_variable() {
        let env = [("PORT", "abc"), ("EMPTY", " ")];
        let error = parse_or::<u16>(&env, "PORT", 5000).unwrap_err();
        assert_eq!(error.name, "PORT");
        assert!(error.to_string().contains("PORT"));
        assert_eq!(parse_or::<u16>(&env, "EMPTY", 7).unwrap(), 7);
        assert_eq!(required(&env, "MISSING").unwrap_err().name, "MISSING");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("amqp://guest:secret@rabbit:5672/%2f"),
            "amqp://guest:***@rabbit:5672/%2f"
        );
        assert_eq!(redact_url("amqp://rabbit:5672"), "amqp://rabbit:5672");
        assert_eq!(redact_url("nonsense"), "<unparseable url>");
    }
}
