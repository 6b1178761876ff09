//! Prints the `PaymentSystem` CustomResourceDefinition as YAML (committed as
//! `crds/paymentsystems.yaml`; a test fails when the two differ).

fn main() {
    print!("{}", paysys_operator::crd_yaml());
}
