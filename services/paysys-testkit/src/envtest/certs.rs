//! The key material of a throw-away control plane: a CA, the API server's serving
//! certificate for `127.0.0.1`/`localhost`, and the ServiceAccount token signing key.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

/// Paths of the PEM files written by [`write`].
pub struct Files {
    pub ca_cert: PathBuf,
    /// DER of the CA certificate, for the clients' trust roots.
    pub ca_der: Vec<u8>,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// ECDSA P-256 private key: the API server signs ServiceAccount tokens with it...
    pub service_account_key: PathBuf,
    /// ...and verifies them with its public half.
    pub service_account_public_key: PathBuf,
}

/// Generates everything into `dir`.
pub fn write(dir: &Path) -> anyhow::Result<Files> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "paysys-envtest-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut serving_params = CertificateParams::new(vec!["localhost".to_owned()])?;
    serving_params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    serving_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let serving_key = KeyPair::generate()?;
    let serving = serving_params.signed_by(&serving_key, &ca)?;

    let files = Files {
        ca_cert: dir.join("ca.crt"),
        ca_der: ca.der().to_vec(),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        service_account_key: dir.join("service-account.key"),
        service_account_public_key: dir.join("service-account.pub"),
    };
    let service_account_key = KeyPair::generate()?;
    for (path, pem) in [
        (&files.ca_cert, ca.pem()),
        (&files.serving_cert, serving.pem()),
        (&files.serving_key, serving_key.serialize_pem()),
        (
            &files.service_account_key,
            service_account_key.serialize_pem(),
        ),
        (
            &files.service_account_public_key,
            service_account_key.public_key_pem(),
        ),
    ] {
        std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files)
}
