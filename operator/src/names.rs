//! Names of the child objects of one `PaymentSystem`, derived from its name.
//!
//! Deterministic names let the operator find (and delete) a child without listing, and let
//! users guess them: `<instance>-payments-api`, `<instance>-api-key`, ...

/// Longest `PaymentSystem` name: `<name>-payments-api` must stay a valid Service name
/// (a DNS label of at most 63 characters).
pub const MAX_INSTANCE_NAME: usize = 63 - "-payments-api".len();

/// The parts of the system, each with its own workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    PaymentsApi,
    RiskEngine,
    RabbitMq,
    Postgres,
}

impl Component {
    /// `app.kubernetes.io/name` and the suffix of the workload's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::PaymentsApi => "payments-api",
            Self::RiskEngine => "risk-engine",
            Self::RabbitMq => "rabbitmq",
            Self::Postgres => "postgresql",
        }
    }

    /// `app.kubernetes.io/component`.
    pub fn role(self) -> &'static str {
        match self {
            Self::PaymentsApi => "api",
            Self::RiskEngine => "risk",
            Self::RabbitMq => "broker",
            Self::Postgres => "database",
        }
    }
}

/// Every child name of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub instance: String,
}

impl Names {
    pub fn new(instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
        }
    }

    /// Deployment, Service, PodDisruptionBudget and NetworkPolicy of a component.
    pub fn workload(&self, component: Component) -> String {
        format!("{}-{}", self.instance, component.name())
    }

    /// Generated credentials of a managed dependency.
    pub fn credentials(&self, component: Component) -> String {
        format!("{}-{}-credentials", self.instance, component.name())
    }

    /// PersistentVolumeClaim of a managed dependency.
    pub fn data(&self, component: Component) -> String {
        format!("{}-{}-data", self.instance, component.name())
    }

    /// The risk rules ConfigMap.
    pub fn rules(&self) -> String {
        format!("{}-risk-rules", self.instance)
    }

    /// The generated API key Secret.
    pub fn api_key(&self) -> String {
        format!("{}-api-key", self.instance)
    }
}
