//! Names of the child objects of one `PaymentSystem`, derived from its name.
//!
//! Deterministic names let the operator find (and delete) a child without listing, and let
//! users guess them: `<instance>-payments-api`, `<instance>-api-key`, ...

/// The one field manager of every write the operator makes. It has been `paysys-operator`
/// since the first release and must keep that name: a field applied under another name stays
/// owned by it, so a release that no longer sets it could not remove it.
pub const FIELD_MANAGER: &str = "paysys-operator";

/// Name of the data volume in a managed server's pod.
pub const DATA_VOLUME: &str = "data";

/// Longest `PaymentSystem` name: `<name>-payments-api` must stay a valid Service name
/// (a DNS label of at most 63 characters).
pub const MAX_INSTANCE_NAME: usize = 63 - "-payments-api".len();

/// Longest name of a `PaymentSystem` with a data feed: `<name>-data-feed` is a CronJob, whose
/// name is limited to 52 characters (its Jobs append 11).
pub const MAX_FEED_INSTANCE_NAME: usize = 52 - "-data-feed".len();

/// The parts of the system, each with its own Deployment: what its objects are named and
/// labelled after. What a part *is* is told by [`Workload`] and [`Server`], which split
/// these in two so every match over either is exhaustive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    PaymentsApi,
    RiskEngine,
    RabbitMq,
    Postgres,
    /// The scheduled Parquet export (a CronJob, not a Deployment).
    DataFeed,
}

/// The paysys services, built from the paysys images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    PaymentsApi,
    RiskEngine,
}

impl Workload {
    pub fn component(self) -> Component {
        match self {
            Self::PaymentsApi => Component::PaymentsApi,
            Self::RiskEngine => Component::RiskEngine,
        }
    }
}

/// The single-instance servers the operator runs when a dependency is `managed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Server {
    RabbitMq,
    Postgres,
}

impl Server {
    pub fn component(self) -> Component {
        match self {
            Self::RabbitMq => Component::RabbitMq,
            Self::Postgres => Component::Postgres,
        }
    }
}

impl From<Workload> for Component {
    fn from(workload: Workload) -> Self {
        workload.component()
    }
}

impl From<Server> for Component {
    fn from(server: Server) -> Self {
        server.component()
    }
}

impl Component {
    /// `app.kubernetes.io/name` and the suffix of the workload's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::PaymentsApi => "payments-api",
            Self::RiskEngine => "risk-engine",
            Self::RabbitMq => "rabbitmq",
            Self::Postgres => "postgresql",
            Self::DataFeed => "data-feed",
        }
    }

    /// `app.kubernetes.io/component`.
    pub fn role(self) -> &'static str {
        match self {
            Self::PaymentsApi => "api",
            Self::RiskEngine => "risk",
            Self::RabbitMq => "broker",
            Self::Postgres => "database",
            Self::DataFeed => "export",
        }
    }
}

/// A Secret the operator generates (once) for an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GeneratedSecret {
    /// The API key callers use when the spec names no auth Secret.
    ApiKey,
    /// The user and password of a managed server.
    Credentials(Server),
    /// The data feed's Fernet key, when the spec names no key Secret.
    FeedKey,
    /// The key encrypting the webhook signing secrets, when the spec names no Secret.
    WebhooksKey,
}

impl GeneratedSecret {
    /// The component whose labels the Secret carries.
    pub fn component(self) -> Component {
        match self {
            Self::ApiKey | Self::WebhooksKey => Component::PaymentsApi,
            Self::Credentials(server) => server.component(),
            Self::FeedKey => Component::DataFeed,
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

    /// Deployment, Service, PodDisruptionBudget and NetworkPolicy of a component; the
    /// CronJob of the data feed.
    pub fn workload(&self, component: impl Into<Component>) -> String {
        format!("{}-{}", self.instance, component.into().name())
    }

    /// Generated credentials of a managed server.
    pub fn credentials(&self, server: Server) -> String {
        format!(
            "{}-{}-credentials",
            self.instance,
            server.component().name()
        )
    }

    /// PersistentVolumeClaim of a managed server.
    pub fn data(&self, server: Server) -> String {
        format!("{}-{}-data", self.instance, server.component().name())
    }

    /// PersistentVolumeClaim of the data feed's files, when the operator creates it.
    pub fn feed_claim(&self) -> String {
        format!("{}-{}-data", self.instance, Component::DataFeed.name())
    }

    /// The risk rules ConfigMap.
    pub fn rules(&self) -> String {
        format!("{}-risk-rules", self.instance)
    }

    /// The immutable ConfigMap holding a checked copy of a risk model, named after the first
    /// 12 hex digits of its content's digest (same name, same content: never updated).
    pub fn model_copy(&self, digest: &str) -> String {
        format!(
            "{}-model-{}",
            self.instance,
            &digest[..digest.len().min(12)]
        )
    }

    /// The generated API key Secret.
    pub fn api_key(&self) -> String {
        format!("{}-api-key", self.instance)
    }

    /// The generated Fernet key Secret of the data feed.
    pub fn feed_key(&self) -> String {
        format!("{}-feed-key", self.instance)
    }

    /// The generated Secret holding the key that encrypts the webhook signing secrets.
    pub fn webhooks_key(&self) -> String {
        format!("{}-webhooks-key", self.instance)
    }

    /// The resource another operator runs a server from (CloudNativePG `Cluster`,
    /// `RabbitmqCluster`). Short, and unlike the managed server's names, so switching between
    /// `managed` and an operator never has two owners fight over one Service name
    /// (`<name>-mq` is also the RabbitMQ Cluster Operator's Service; its pods are
    /// `<name>-mq-server-N`, within a DNS label for every allowed instance name).
    pub fn operated(&self, server: Server) -> String {
        let suffix = match server {
            Server::RabbitMq => "mq",
            Server::Postgres => "pg",
        };
        format!("{}-{suffix}", self.instance)
    }

    /// The Secret holding the connection URL of `server` run by its operator: CloudNativePG
    /// names its application Secret `<cluster>-app`, the Cluster Operator its default user's
    /// `<cluster>-default-user`.
    pub fn operated_secret(&self, server: Server) -> String {
        let name = self.operated(server);
        match server {
            Server::Postgres => format!("{name}-app"),
            Server::RabbitMq => format!("{name}-default-user"),
        }
    }

    /// The name of a generated Secret.
    pub fn generated(&self, secret: GeneratedSecret) -> String {
        match secret {
            GeneratedSecret::ApiKey => self.api_key(),
            GeneratedSecret::Credentials(server) => self.credentials(server),
            GeneratedSecret::FeedKey => self.feed_key(),
            GeneratedSecret::WebhooksKey => self.webhooks_key(),
        }
    }
}
