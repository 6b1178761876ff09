//! The committed CRD must be exactly what `crdgen` prints, so the Helm chart and
//! `kubectl apply -f crds/` never ship a schema the operator does not implement.

#[test]
fn committed_crd_matches_crdgen_output() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/paymentsystems.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/paymentsystems.yaml exists");
    let generated = paysys_operator::crd_yaml();
    assert!(
        committed == generated,
        "crds/paymentsystems.yaml is stale: run `cargo run -p paysys-operator --bin crdgen > crds/paymentsystems.yaml`"
    );
}

#[test]
fn crd_names_follow_the_contract() {
    let crd = paysys_operator::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("paymentsystems.paysys.io")
    );
    assert_eq!(crd.spec.group, "paysys.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "PaymentSystem");
    assert_eq!(crd.spec.names.plural, "paymentsystems");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["ps".to_string()][..])
    );
    assert_eq!(
        crd.spec.names.categories.as_deref(),
        Some(&["paysys".to_string()][..])
    );
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|column| column.name.as_str())
        .collect();
    assert_eq!(columns, ["Ready", "API", "Risk", "Reason", "Age"]);
}

#[test]
fn crd_yaml_has_no_private_number_encoding() {
    let yaml = paysys_operator::crd_yaml();
    assert!(
        !yaml.contains("serde_json"),
        "numbers must render as plain YAML"
    );
    assert!(!yaml.contains(": null"), "null defaults are stripped");
}

/// The default images are written out for users in the CRD's field description and in
/// docs/operator.md; both must name the images the operator actually runs.
#[test]
fn documented_default_images_are_the_ones_used() {
    use paysys_operator::validate::{POSTGRES_IMAGE, RABBITMQ_IMAGE};
    let yaml = paysys_operator::crd_yaml();
    let descriptions: Vec<&str> = yaml
        .lines()
        .filter(|line| line.contains("Image override (defaults:"))
        .collect();
    assert_eq!(
        descriptions.len(),
        2,
        "rabbitmq.managed and database.managed"
    );
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operator.md"))
        .expect("docs/operator.md exists");
    let table_row = docs
        .lines()
        .find(|line| line.starts_with("| `….managed.image`"))
        .expect("docs/operator.md documents managed.image");
    for text in descriptions.into_iter().chain([table_row]) {
        for image in [POSTGRES_IMAGE, RABBITMQ_IMAGE] {
            assert!(text.contains(&format!("`{image}`")), "{image} in {text}");
        }
    }
}
