//! Every file generated from the operator's code (the CRD, its copy in the chart, the chart's
//! operator RBAC) must be committed exactly as `generate` writes it, so the Helm chart and
//! `kubectl apply -f crds/` never ship a schema or a grant the operator does not implement.

#[test]
fn committed_generated_files_match_the_generator() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let files = paysys_operator::generate::files();
    let paths: Vec<&str> = files.iter().map(|(path, _)| *path).collect();
    assert_eq!(
        paths,
        [
            "crds/paymentsystems.yaml",
            "charts/paysys/files/paymentsystems.crd.yaml",
            "charts/paysys/templates/rbac.yaml",
        ]
    );
    for (path, generated) in files {
        let committed = std::fs::read_to_string(format!("{root}/{path}"))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            committed == generated,
            "{path} is stale: run `cargo run -p paysys-operator --bin generate`"
        );
    }
}

/// The chart's rules are the operator's: a child kind added to the list appears in the
/// generated role, with every verb the operator uses on a child kind.
#[test]
fn the_generated_role_grants_every_child_kind() {
    let rbac = paysys_operator::generate::chart_rbac();
    for kind in paysys_operator::build::Children::kinds() {
        assert!(
            rbac.contains(&format!("{:?}", kind.plural)),
            "{} missing from the chart's role",
            kind.plural
        );
    }
    assert!(rbac.contains(r#"verbs: ["get", "list", "watch", "create", "patch", "delete"]"#));
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
    assert_eq!(
        columns,
        [
            "Ready", "API", "Risk", "Model", "Shadow", "Webhooks", "Reason", "Age"
        ]
    );
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

/// The schema paths of every field (property, at any depth: under `items` as `[]`, under
/// `additionalProperties` as `{}`) whose description is absent or empty.
fn undescribed_fields(schema: &serde_json::Value) -> Vec<String> {
    fn walk(node: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        for (key, child) in node["properties"].as_object().into_iter().flatten() {
            let field = format!("{path}.{key}");
            let described = child["description"]
                .as_str()
                .is_some_and(|text| !text.trim().is_empty());
            if !described {
                out.push(field.clone());
            }
            walk(child, &field, out);
        }
        for (key, suffix) in [("items", "[]"), ("additionalProperties", "{}")] {
            if node[key].is_object() {
                walk(&node[key], &format!("{path}{suffix}"), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(schema, "", &mut out);
    out
}

/// `kubectl explain paymentsystem.<field>` has something to say for every field: a doc
/// comment in crd.rs (or the types it uses), or k8s-openapi's own description.
#[test]
fn every_field_of_the_crd_has_a_description() {
    let crd = serde_json::to_value(paysys_operator::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let missing = undescribed_fields(schema);
    assert!(
        missing.is_empty(),
        "CRD fields without a description (add a doc comment to the field in \
         operator/src/crd.rs or the type it uses):\n  {}",
        missing.join("\n  ")
    );
    // The walk reaches nested fields: deep ones are among those it checks.
    let mut all = Vec::new();
    fn count(node: &serde_json::Value, out: &mut Vec<String>) {
        for (key, child) in node["properties"].as_object().into_iter().flatten() {
            out.push(key.clone());
            count(child, out);
        }
        for key in ["items", "additionalProperties"] {
            if node[key].is_object() {
                count(&node[key], out);
            }
        }
    }
    count(schema, &mut all);
    for deep in [
        "lastTransitionTime",
        "blockedPaymentMethod",
        "storageClassName",
    ] {
        assert!(all.iter().any(|key| key == deep), "{deep} not walked");
    }
}

#[test]
fn the_description_check_names_each_field_without_one() {
    let schema = serde_json::json!({
        "description": "root",
        "properties": {
            "spec": {"description": "d", "properties": {
                "a": {"type": "string"},
                "b": {"description": " ", "type": "string"},
                "list": {"description": "d", "items": {"properties": {"c": {"type": "integer"}}}},
                "map": {"description": "d", "additionalProperties": {"properties": {"d": {}}}},
                "ok": {"description": "fine"}
            }}
        }
    });
    assert_eq!(
        undescribed_fields(&schema),
        [".spec.a", ".spec.b", ".spec.list[].c", ".spec.map{}.d"]
    );
}

/// Conditions are a map keyed by `type`: at most one of each, and server-side apply merges
/// them by type instead of replacing the list.
#[test]
fn status_conditions_are_a_list_map_keyed_by_type() {
    let crd = serde_json::to_value(paysys_operator::crd()).unwrap();
    let conditions = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    let required = conditions["items"]["required"].as_array().unwrap();
    assert!(
        required.iter().any(|key| key == "type"),
        "a list map's key must be required"
    );
}
