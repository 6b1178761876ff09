//! The risk models: `riskEngine.model` against what was read for it. A model in a ConfigMap is
//! checked here exactly as the engine checks it at start-up (`paysys_core::model_card`: the
//! card parses, its features are this release's, the model file's sha256 is the card's, the
//! model parses), so a model the engine would refuse is never rolled out. A model on a claim
//! is checked by the engine itself; here only its refusal is read back from the pods started
//! for it.

use std::collections::BTreeMap;

use paysys_core::model_card::{CARD_FILE, Card, Refusal};
use sha2::{Digest, Sha256};

use super::error::ValidationError;
use super::model::{Models, ServedModel};
use crate::crd::{ModelSourceRef, RiskModelSpec};
use crate::names::Names;
use crate::observe::{ModelFiles, RefusedPod};

/// Resolves `spec` from the model ConfigMaps read (`files`) and the risk engine pods that
/// refused their model (`refused`).
pub fn resolve(
    names: &Names,
    spec: &RiskModelSpec,
    files: &ModelFiles,
    refused: &[RefusedPod],
) -> Result<Models, ValidationError> {
    let champion = spec.champion().ok_or_else(|| {
        super::error::invalid(
            "riskEngine.model: set exactly one of configMap or persistentVolumeClaim",
        )
    })?;
    let champion = served(names, champion, files)?;
    let shadow = spec
        .shadow
        .as_ref()
        .map(|shadow| {
            let source = shadow.source().ok_or_else(|| {
                super::error::invalid(
                    "riskEngine.model.shadow: set exactly one of configMap or persistentVolumeClaim",
                )
            })?;
            served(names, source, files)
        })
        .transpose()?;
    let models = Models { champion, shadow };
    if let Some(pod) = refused.iter().find(|pod| started_for(pod, &models)) {
        return Err(ValidationError::ModelRefused {
            pod: pod.name.clone(),
            message: pod.message.clone(),
        });
    }
    Ok(models)
}

/// Whether `pod` was started for `models` (its annotations name their versions), on a claim:
/// a refusal of a copied model cannot be the model's (it was checked), and a pod of an older
/// template is the Deployment's past, not this spec's.
fn started_for(pod: &RefusedPod, models: &Models) -> bool {
    let on_claim = [Some(&models.champion), models.shadow.as_ref()]
        .into_iter()
        .flatten()
        .any(|model| matches!(model, ServedModel::Claim { .. }));
    on_claim
        && pod.champion.as_deref() == Some(models.champion.version())
        && pod.shadow.as_deref() == models.shadow.as_ref().map(ServedModel::version)
}

fn served(
    names: &Names,
    source: ModelSourceRef<'_>,
    files: &ModelFiles,
) -> Result<ServedModel, ValidationError> {
    match source {
        ModelSourceRef::Claim(claim) => Ok(ServedModel::Claim {
            version: claim.version.clone(),
            claim_name: claim.claim_name.clone(),
            sub_path: claim.sub_path.clone(),
        }),
        ModelSourceRef::ConfigMap(config_map) => {
            let name = &config_map.name;
            let data = files
                .get(name)
                .ok_or_else(|| ValidationError::ModelNotFound(name.clone()))?;
            checked_copy(names, &format!("ConfigMap {name}"), data)
        }
    }
}

/// The model in `data` (the files of `source`) as the operator's copy, if it passes the
/// engine's checks.
pub fn checked_copy(
    names: &Names,
    source: &str,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<ServedModel, ValidationError> {
    let invalid = |key: &str, message: String| ValidationError::ModelInvalid {
        source_name: format!("{source} key {key}"),
        message,
    };
    let text = |key: &str| -> Result<String, ValidationError> {
        let bytes = data
            .get(key)
            .ok_or_else(|| invalid(key, "no such key".into()))?;
        String::from_utf8(bytes.clone()).map_err(|_| invalid(key, "is not UTF-8 text".into()))
    };
    let card_text = text(CARD_FILE)?;
    let card =
        Card::parse(&card_text).map_err(|refusal| invalid(CARD_FILE, refusal.to_string()))?;
    let model_text = text(&card.model_file)?;
    card.check_model(model_text.as_bytes())
        .map_err(|refusal| match &refusal {
            Refusal::Card(_) => invalid(CARD_FILE, refusal.to_string()),
            Refusal::ModelFile { .. } => invalid(&card.model_file, refusal.to_string()),
        })?;
    let files = BTreeMap::from([
        (CARD_FILE.to_owned(), card_text),
        (card.model_file.clone(), model_text),
    ]);
    Ok(ServedModel::Copied {
        copy: names.model_copy(&digest(&files)),
        version: card.model_version,
        files,
    })
}

/// Hex SHA-256 of the copy's files (names and contents, length-prefixed): the copy's name, so
/// a copy is never changed, only replaced by another.
fn digest(files: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in files {
        for part in [key, value] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClaimModel, ConfigMapModel, ModelSource};

    const CARD: &str =
        include_str!("../../../services/risk-engine/tests/fixtures/model/model-card.json");
    const MODEL: &str =
        include_str!("../../../services/risk-engine/tests/fixtures/model/model.txt");

    fn files(card: &str, model: &str) -> ModelFiles {
        ModelFiles::from([(
            "risk-model".to_owned(),
            BTreeMap::from([
                (CARD_FILE.to_owned(), card.as_bytes().to_vec()),
                ("model.txt".to_owned(), model.as_bytes().to_vec()),
            ]),
        )])
    }

    fn from_config_map() -> RiskModelSpec {
        RiskModelSpec {
            config_map: Some(ConfigMapModel {
                name: "risk-model".into(),
            }),
            persistent_volume_claim: None,
            shadow: None,
        }
    }

    fn version() -> String {
        Card::parse(CARD).unwrap().model_version
    }

    #[test]
    fn a_good_model_is_copied_under_a_name_of_its_content() {
        let names = Names::new("shop");
        let models = resolve(&names, &from_config_map(), &files(CARD, MODEL), &[]).unwrap();
        let ServedModel::Copied {
            version,
            copy,
            files: copied,
        } = &models.champion
        else {
            panic!("{models:?}");
        };
        assert_eq!(version, &self::version());
        assert!(copy.starts_with("shop-model-") && copy.len() == "shop-model-".len() + 12);
        assert_eq!(copied["model.txt"], MODEL);
        assert_eq!(copied[CARD_FILE], CARD);
        // Another card for the same model file is another copy.
        let edited = CARD.replacen("\"seed\"", "\"seed_note\": 1, \"seed\"", 1);
        let other = resolve(&names, &from_config_map(), &files(&edited, MODEL), &[]).unwrap();
        assert_ne!(other.champion, models.champion);
        assert_eq!(other.champion.version(), version);
    }

    #[test]
    fn a_model_the_engine_would_refuse_is_refused_naming_the_source_and_the_problem() {
        let names = Names::new("shop");
        let spec = from_config_map();
        let wrong = CARD.replace("payment-features/1", "payment-features/0");
        let error = resolve(&names, &spec, &files(&wrong, MODEL), &[]).unwrap_err();
        assert_eq!(error.reason(), "ModelInvalid");
        assert_eq!(
            error.to_string(),
            format!(
                "the risk model in ConfigMap risk-model key model-card.json cannot be served: model {} was trained on features payment-features/0, this engine computes payment-features/1",
                version()
            )
        );
        let corrupt = MODEL.replacen("leaf_value=", "leaf_value=9", 1);
        let error = resolve(&names, &spec, &files(CARD, &corrupt), &[]).unwrap_err();
        assert!(
            error.to_string().starts_with(
                "the risk model in ConfigMap risk-model key model.txt cannot be served: model "
            ) && error.to_string().contains("sha256 is"),
            "{error}"
        );
        let mut no_model = files(CARD, MODEL);
        no_model.get_mut("risk-model").unwrap().remove("model.txt");
        assert_eq!(
            resolve(&names, &spec, &no_model, &[])
                .unwrap_err()
                .to_string(),
            "the risk model in ConfigMap risk-model key model.txt cannot be served: no such key"
        );
        assert_eq!(
            resolve(&names, &spec, &ModelFiles::new(), &[]).unwrap_err(),
            ValidationError::ModelNotFound("risk-model".into())
        );
    }

    #[test]
    fn a_refusal_counts_only_from_a_pod_started_for_the_current_claim_model() {
        let names = Names::new("shop");
        let spec = RiskModelSpec {
            config_map: None,
            persistent_volume_claim: Some(ClaimModel {
                claim_name: "models".into(),
                sub_path: Some("2026-11-12".into()),
                version: "m-new".into(),
            }),
            shadow: Some(ModelSource {
                config_map: Some(ConfigMapModel {
                    name: "risk-model".into(),
                }),
                persistent_volume_claim: None,
            }),
        };
        let pod = |champion: &str| RefusedPod {
            name: format!("shop-risk-engine-{champion}"),
            champion: Some(champion.into()),
            shadow: Some(version()),
            message: "risk-engine: invalid configuration: MODEL_VERSION: is m-new, but ...".into(),
        };
        let models = resolve(&names, &spec, &files(CARD, MODEL), &[pod("m-old")]).unwrap();
        assert_eq!(models.champion.version(), "m-new");
        assert_eq!(models.shadow.as_ref().unwrap().version(), version());
        let error = resolve(
            &names,
            &spec,
            &files(CARD, MODEL),
            &[pod("m-old"), pod("m-new")],
        )
        .unwrap_err();
        assert_eq!(
            error,
            ValidationError::ModelRefused {
                pod: "shop-risk-engine-m-new".into(),
                message: pod("m-new").message,
            }
        );
    }
}
