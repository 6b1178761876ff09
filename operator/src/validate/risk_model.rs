//! The risk models: `riskEngine.model` against what was read for it. A model in a ConfigMap or
//! a Secret is checked here exactly as the engine checks it at start-up
//! (`paysys_core::model_card`: the card parses, its features are this release's, the model
//! file's sha256 is the card's, the model parses), so a model the engine would refuse is never
//! rolled out. A model on a claim is checked by the engine itself; here only its refusal is
//! read back from the pods started for it.
//!
//! A refused model never blocks the rest of the spec: it is held back (see [`HeldBack`]), the
//! engine keeps the model its live pod template mounts in that slot (the last good one: a
//! model reaches a template only after passing these checks), and everything else is applied.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Volume;
use paysys_core::model_card::{CARD_FILE, Card, Refusal};
use sha2::{Digest, Sha256};

use super::error::ValidationError;
use super::model::{HeldBack, HeldEngine, ModelCopy, ModelLocation, Models, ServedModel};
use crate::crd::{ModelSourceRef, RiskModelSpec};
use crate::names::Names;
use crate::observe::models::{LiveEngine, LiveModel, ModelStore};
use crate::observe::{ModelFiles, RefusedPod};

/// `riskEngine.model` resolved: what the pod template mounts, and what was held back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resolved {
    pub model: Option<Models>,
    pub held_back: Option<HeldBack>,
}

/// Resolves `spec` from the model ConfigMaps and Secrets read (`files`), the risk engine pods
/// that refused their model (`refused`) and the live pod template (`live`). Fails only on a
/// spec without exactly one source (which the CRD's CEL rules refuse at admission).
pub fn resolve(
    names: &Names,
    spec: &RiskModelSpec,
    files: &ModelFiles,
    refused: &[RefusedPod],
    live: &LiveEngine,
) -> Result<Resolved, ValidationError> {
    let champion = spec.champion().ok_or_else(|| {
        super::error::invalid(
            "riskEngine.model: set exactly one of configMap, secret or persistentVolumeClaim",
        )
    })?;
    let shadow = spec
        .shadow
        .as_ref()
        .map(|shadow| {
            shadow.source().ok_or_else(|| {
                super::error::invalid(
                    "riskEngine.model.shadow: set exactly one of configMap, secret or persistentVolumeClaim",
                )
            })
        })
        .transpose()?;
    let mut copies = Vec::new();
    let mut refusals = Vec::new();
    let mut check = |source| match served(names, source, files) {
        Ok((model, copy)) => {
            copies.extend(copy);
            Some(model)
        }
        Err(refusal) => {
            refusals.push(refusal);
            None
        }
    };
    let champion = check(champion);
    let shadow = shadow.map(&mut check);
    if refusals.is_empty() {
        let models = Models {
            champion: champion.expect("not refused"),
            shadow: shadow.flatten(),
            copies,
        };
        // A claim's model refused by the pods started for it: those pods never become ready,
        // so the old ones keep serving; the template stays (taking it back would start the
        // refused pods again at the next reconcile).
        let held_back = refused
            .iter()
            .find(|pod| started_for(pod, &models))
            .map(|pod| {
                let refusal = ValidationError::ModelRefused {
                    pod: pod.name.clone(),
                    message: pod.message.clone(),
                };
                HeldBack {
                    message: format!(
                        "{refusal}; the pods of the previous model keep serving (a refusing pod                          never becomes ready)"
                    ),
                    refusal,
                    engine: HeldEngine::Models,
                }
            });
        return Ok(Resolved {
            model: Some(models),
            held_back,
        });
    }
    let mut why: Vec<String> = refusals.iter().map(ToString::to_string).collect();
    // The same source as champion and challenger is refused once.
    why.dedup();
    let why = why.join("; ");
    let refusal = refusals.swap_remove(0);
    // Each refused model is replaced by the one the live template mounts in its slot.
    let champion = champion.or_else(|| live.champion.as_ref().and_then(kept));
    let shadow = match shadow {
        Some(None) => live.shadow.as_ref().and_then(kept),
        checked => checked.flatten(),
    };
    let (model, engine, kept) = match (champion, &live.template) {
        (Some(champion), _) => {
            let kept = match &shadow {
                Some(shadow) => format!(
                    "the risk engine serves model {} with challenger {}",
                    champion.version, shadow.version
                ),
                None => format!("the risk engine serves model {}", champion.version),
            };
            let models = Models {
                champion,
                shadow,
                copies,
            };
            (Some(models), HeldEngine::Models, kept)
        }
        (None, Some(template)) => (
            None,
            HeldEngine::Template(Box::new(template.clone())),
            "no good model was rolled out before: the risk engine is left as it is".to_owned(),
        ),
        (None, None) => (
            None,
            HeldEngine::Absent,
            "no good model was rolled out before: no risk engine is created until there is one"
                .to_owned(),
        ),
    };
    Ok(Resolved {
        model,
        held_back: Some(HeldBack {
            refusal,
            message: format!("{why}; {kept}, every other change is applied"),
            engine,
        }),
    })
}

/// The model `live` mounts, as served again (`None` for a volume the operator never makes).
fn kept(live: &LiveModel) -> Option<ServedModel> {
    let Volume {
        config_map,
        secret,
        persistent_volume_claim,
        ..
    } = &live.volume;
    let location = if let Some(config_map) = config_map {
        ModelLocation::Copy {
            store: ModelStore::ConfigMap,
            name: config_map.name.clone(),
        }
    } else if let Some(secret) = secret {
        ModelLocation::Copy {
            store: ModelStore::Secret,
            name: secret.secret_name.clone()?,
        }
    } else {
        ModelLocation::Claim {
            claim_name: persistent_volume_claim.as_ref()?.claim_name.clone(),
            sub_path: live.sub_path.clone(),
        }
    };
    Some(ServedModel {
        version: live.version.clone(),
        location,
    })
}

/// Whether `pod` was started for `models` (its annotations name their versions), on a claim:
/// a refusal of a copied model cannot be the model's (it was checked), and a pod of an older
/// template is the Deployment's past, not this spec's.
fn started_for(pod: &RefusedPod, models: &Models) -> bool {
    let on_claim = [Some(&models.champion), models.shadow.as_ref()]
        .into_iter()
        .flatten()
        .any(|model| matches!(model.location, ModelLocation::Claim { .. }));
    on_claim
        && pod.champion.as_deref() == Some(models.champion.version())
        && pod.shadow.as_deref() == models.shadow.as_ref().map(ServedModel::version)
}

/// The model `source` names, and the copy to serve it from (none for a claim), if it passes.
fn served(
    names: &Names,
    source: ModelSourceRef<'_>,
    files: &ModelFiles,
) -> Result<(ServedModel, Option<ModelCopy>), ValidationError> {
    let (store, name) = match source {
        ModelSourceRef::Claim(claim) => {
            let model = ServedModel {
                version: claim.version.clone(),
                location: ModelLocation::Claim {
                    claim_name: claim.claim_name.clone(),
                    sub_path: claim.sub_path.clone(),
                },
            };
            return Ok((model, None));
        }
        ModelSourceRef::ConfigMap(config_map) => (ModelStore::ConfigMap, &config_map.name),
        ModelSourceRef::Secret(secret) => (ModelStore::Secret, &secret.name),
    };
    let source_name = format!("{} {name}", store.kind());
    let data = files
        .get(&(store, name.clone()))
        .ok_or_else(|| ValidationError::ModelNotFound {
            source_name: source_name.clone(),
        })?;
    let (version, files) = checked(&source_name, data)?;
    let copy = ModelCopy {
        store,
        name: names.model_copy(&digest(&files)),
        files,
    };
    let model = ServedModel {
        version,
        location: ModelLocation::Copy {
            store,
            name: copy.name.clone(),
        },
    };
    Ok((model, Some(copy)))
}

/// The model in `data` (the files of `source`, e.g. `Secret risk-model`), if it passes the
/// engine's checks: its version, and the files of the operator's copy.
fn checked(
    source: &str,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<(String, BTreeMap<String, String>), ValidationError> {
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
    Ok((card.model_version, files))
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
    use crate::crd::{ClaimModel, ConfigMapModel, ModelSource, SecretModel};

    const CARD: &str =
        include_str!("../../../services/risk-engine/tests/fixtures/model/model-card.json");
    const MODEL: &str =
        include_str!("../../../services/risk-engine/tests/fixtures/model/model.txt");

    fn model_files(card: &str, model: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (CARD_FILE.to_owned(), card.as_bytes().to_vec()),
            ("model.txt".to_owned(), model.as_bytes().to_vec()),
        ])
    }

    /// ConfigMap `risk-model` holding `card` and `model`.
    fn files(card: &str, model: &str) -> ModelFiles {
        ModelFiles::from([(
            (ModelStore::ConfigMap, "risk-model".to_owned()),
            model_files(card, model),
        )])
    }

    fn from_config_map() -> RiskModelSpec {
        RiskModelSpec {
            config_map: Some(ConfigMapModel {
                name: "risk-model".into(),
            }),
            secret: None,
            persistent_volume_claim: None,
            shadow: None,
        }
    }

    fn version() -> String {
        Card::parse(CARD).unwrap().model_version
    }

    fn no_live() -> LiveEngine {
        LiveEngine::default()
    }

    /// `resolve` of a spec that holds nothing back.
    fn served_models(spec: &RiskModelSpec, files: &ModelFiles) -> Models {
        let resolved = resolve(&Names::new("shop"), spec, files, &[], &no_live()).unwrap();
        assert_eq!(resolved.held_back, None);
        resolved.model.unwrap()
    }

    /// The refusal of a spec whose models are all refused, with no live engine.
    fn refusal(spec: &RiskModelSpec, files: &ModelFiles) -> ValidationError {
        let resolved = resolve(&Names::new("shop"), spec, files, &[], &no_live()).unwrap();
        let held_back = resolved.held_back.expect("held back");
        assert_eq!(held_back.engine, HeldEngine::Absent);
        assert_eq!(resolved.model, None);
        held_back.refusal
    }

    #[test]
    fn a_good_model_is_copied_under_a_name_of_its_content_in_its_sources_kind() {
        let models = served_models(&from_config_map(), &files(CARD, MODEL));
        let [copy] = &models.copies[..] else {
            panic!("{models:?}");
        };
        assert_eq!(models.champion.version, version());
        assert_eq!(
            models.champion.location,
            ModelLocation::Copy {
                store: ModelStore::ConfigMap,
                name: copy.name.clone(),
            }
        );
        assert!(
            copy.name.starts_with("shop-model-") && copy.name.len() == "shop-model-".len() + 12
        );
        assert_eq!(copy.files["model.txt"], MODEL);
        assert_eq!(copy.files[CARD_FILE], CARD);
        // Another card for the same model file is another copy.
        let edited = CARD.replacen("\"seed\"", "\"seed_note\": 1, \"seed\"", 1);
        let other = served_models(&from_config_map(), &files(&edited, MODEL));
        assert_ne!(other.copies[0].name, copy.name);
        assert_eq!(other.champion.version, version());
        // The same model from a Secret: a Secret copy of the same name.
        let spec = RiskModelSpec {
            config_map: None,
            secret: Some(SecretModel {
                name: "risk-model".into(),
            }),
            ..from_config_map()
        };
        let secret_files = ModelFiles::from([(
            (ModelStore::Secret, "risk-model".to_owned()),
            model_files(CARD, MODEL),
        )]);
        let from_secret = served_models(&spec, &secret_files);
        assert_eq!(from_secret.copies[0].store, ModelStore::Secret);
        assert_eq!(from_secret.copies[0].name, copy.name);
        assert_eq!(from_secret.copies[0].files, copy.files);
        // A model (a Secret's among them) is never printed, only its files' sizes.
        let printed = format!("{from_secret:?}");
        assert!(
            !printed.contains("leaf_value") && printed.contains(&format!("{} bytes", MODEL.len())),
            "{printed}"
        );
        // A ConfigMap of that name is not the Secret.
        assert_eq!(
            refusal(&spec, &files(CARD, MODEL)),
            ValidationError::ModelNotFound {
                source_name: "Secret risk-model".into()
            }
        );
    }

    #[test]
    fn a_model_the_engine_would_refuse_is_refused_naming_the_source_and_the_problem() {
        let spec = from_config_map();
        let wrong = CARD.replace("payment-features/1", "payment-features/0");
        let error = refusal(&spec, &files(&wrong, MODEL));
        assert_eq!(error.reason(), "ModelInvalid");
        assert_eq!(
            error.to_string(),
            format!(
                "the risk model in ConfigMap risk-model key model-card.json cannot be served: model {} was trained on features payment-features/0, this engine computes payment-features/1",
                version()
            )
        );
        let corrupt = MODEL.replacen("leaf_value=", "leaf_value=9", 1);
        let error = refusal(&spec, &files(CARD, &corrupt));
        assert!(
            error.to_string().starts_with(
                "the risk model in ConfigMap risk-model key model.txt cannot be served: model "
            ) && error.to_string().contains("sha256 is"),
            "{error}"
        );
        let mut no_model = files(CARD, MODEL);
        no_model
            .values_mut()
            .for_each(|files| drop(files.remove("model.txt")));
        assert_eq!(
            refusal(&spec, &no_model).to_string(),
            "the risk model in ConfigMap risk-model key model.txt cannot be served: no such key"
        );
        assert_eq!(
            refusal(&spec, &ModelFiles::new()),
            ValidationError::ModelNotFound {
                source_name: "ConfigMap risk-model".into()
            }
        );
    }

    /// A live risk engine template mounting `champion` (a ConfigMap copy) and `shadow` (a
    /// claim directory), as `observe` reads it.
    fn live(champion: Option<&str>, shadow: Option<&str>) -> LiveEngine {
        let mut volumes =
            vec![serde_json::json!({"name": "rules", "configMap": {"name": "shop-risk-rules"}})];
        let mut mounts =
            vec![serde_json::json!({"name": "rules", "mountPath": "/etc/paysys/risk"})];
        let mut annotations = serde_json::Map::new();
        if let Some(version) = champion {
            volumes.push(serde_json::json!({"name": "model", "configMap": {"name": "shop-model-0123456789ab"}}));
            mounts.push(serde_json::json!({"name": "model", "mountPath": "/etc/paysys/model"}));
            annotations.insert("paysys.io/model-version".into(), version.into());
        }
        if let Some(version) = shadow {
            volumes.push(serde_json::json!({"name": "shadow-model", "persistentVolumeClaim": {"claimName": "models", "readOnly": true}}));
            mounts.push(serde_json::json!({"name": "shadow-model", "mountPath": "/etc/paysys/shadow-model", "subPath": version}));
            annotations.insert("paysys.io/shadow-model-version".into(), version.into());
        }
        let template = serde_json::from_value(serde_json::json!({
            "metadata": {"annotations": annotations},
            "spec": {
                "containers": [{"name": "risk-engine", "volumeMounts": mounts}],
                "volumes": volumes,
            },
        }))
        .unwrap();
        LiveEngine::of(&Names::new("shop"), Some(template))
    }

    #[test]
    fn the_live_template_tells_its_models_and_copies() {
        let live = live(Some("m-1"), Some("m-s"));
        assert_eq!(live.copies, ["shop-model-0123456789ab"]);
        let champion = live.champion.as_ref().unwrap();
        assert_eq!(
            (champion.version.as_str(), champion.sub_path.as_deref()),
            ("m-1", None)
        );
        assert_eq!(
            kept(champion).unwrap().location,
            ModelLocation::Copy {
                store: ModelStore::ConfigMap,
                name: "shop-model-0123456789ab".into()
            }
        );
        assert_eq!(
            kept(live.shadow.as_ref().unwrap()),
            Some(ServedModel {
                version: "m-s".into(),
                location: ModelLocation::Claim {
                    claim_name: "models".into(),
                    sub_path: Some("m-s".into())
                },
            })
        );
        let rules_only = self::live(None, None);
        assert_eq!((rules_only.champion, rules_only.shadow), (None, None));
        assert!(rules_only.copies.is_empty() && rules_only.template.is_some());
    }

    /// A refused model is replaced, slot by slot, by the one the live template mounts; the
    /// other slot and the other copies follow the spec.
    #[test]
    fn a_refused_model_keeps_the_last_good_one_of_its_slot() {
        let names = Names::new("shop");
        let corrupt = MODEL.replacen("leaf_value=", "leaf_value=9", 1);
        // The champion refused, a good challenger: the live champion stays, the challenger
        // rolls out.
        let spec = RiskModelSpec {
            shadow: Some(ModelSource {
                config_map: None,
                secret: Some(SecretModel {
                    name: "challenger".into(),
                }),
                persistent_volume_claim: None,
            }),
            ..from_config_map()
        };
        let mut read = files(CARD, &corrupt);
        read.insert(
            (ModelStore::Secret, "challenger".into()),
            model_files(CARD, MODEL),
        );
        let resolved = resolve(&names, &spec, &read, &[], &live(Some("m-1"), Some("m-s"))).unwrap();
        let models = resolved.model.unwrap();
        assert_eq!(models.champion.version, "m-1");
        assert_eq!(
            models.champion.location,
            ModelLocation::Copy {
                store: ModelStore::ConfigMap,
                name: "shop-model-0123456789ab".into()
            }
        );
        assert_eq!(models.shadow.as_ref().unwrap().version, version());
        assert_eq!(models.copies.len(), 1);
        assert_eq!(models.copies[0].store, ModelStore::Secret);
        let held_back = resolved.held_back.unwrap();
        assert_eq!(held_back.engine, HeldEngine::Models);
        assert_eq!(held_back.refusal.reason(), "ModelInvalid");
        assert!(
            held_back.message.starts_with("the risk model in ConfigMap risk-model key model.txt cannot be served: model ")
                && held_back.message.ends_with(&format!(
                    "; the risk engine serves model m-1 with challenger {}, every other change is applied",
                    version()
                )),
            "{}",
            held_back.message
        );

        // The challenger refused with none live: the engine runs without one.
        let mut read = files(CARD, MODEL);
        read.insert(
            (ModelStore::Secret, "challenger".into()),
            model_files(CARD, &corrupt),
        );
        let resolved = resolve(&names, &spec, &read, &[], &live(Some("m-1"), None)).unwrap();
        let models = resolved.model.unwrap();
        assert_eq!(models.champion.version, version());
        assert_eq!(models.shadow, None);
        let held_back = resolved.held_back.unwrap();
        assert!(
            held_back
                .message
                .starts_with("the risk model in Secret challenger key model.txt")
                && held_back
                    .message
                    .contains(&format!("the risk engine serves model {},", version())),
            "{}",
            held_back.message
        );

        // Both refused: both named, the champion's reason.
        let resolved = resolve(
            &names,
            &spec,
            &ModelFiles::new(),
            &[],
            &live(Some("m-1"), Some("m-s")),
        )
        .unwrap();
        let held_back = resolved.held_back.unwrap();
        assert_eq!(
            held_back.message,
            "the risk model's ConfigMap risk-model not found; the risk model's Secret challenger not found; \
             the risk engine serves model m-1 with challenger m-s, every other change is applied"
        );
        assert_eq!(held_back.refusal.reason(), "ModelNotFound");

        // No good champion before: the live template stays as it is.
        let rules_only = live(None, None);
        let resolved = resolve(
            &names,
            &from_config_map(),
            &ModelFiles::new(),
            &[],
            &rules_only,
        )
        .unwrap();
        assert_eq!(resolved.model, None);
        assert_eq!(
            resolved.held_back.unwrap().engine,
            HeldEngine::Template(Box::new(rules_only.template.unwrap()))
        );
    }

    #[test]
    fn a_refusal_counts_only_from_a_pod_started_for_the_current_claim_model() {
        let names = Names::new("shop");
        let spec = RiskModelSpec {
            config_map: None,
            secret: None,
            persistent_volume_claim: Some(ClaimModel {
                claim_name: "models".into(),
                sub_path: Some("2026-11-12".into()),
                version: "m-new".into(),
            }),
            shadow: Some(ModelSource {
                config_map: Some(ConfigMapModel {
                    name: "risk-model".into(),
                }),
                secret: None,
                persistent_volume_claim: None,
            }),
        };
        let pod = |champion: &str| RefusedPod {
            name: format!("shop-risk-engine-{champion}"),
            champion: Some(champion.into()),
            shadow: Some(version()),
            message: "risk-engine: invalid configuration: MODEL_VERSION: is m-new, but ...".into(),
        };
        let live = live(Some("m-old"), None);
        let resolved = resolve(&names, &spec, &files(CARD, MODEL), &[pod("m-old")], &live).unwrap();
        assert_eq!(resolved.held_back, None);
        let models = resolved.model.unwrap();
        assert_eq!(models.champion.version, "m-new");
        assert_eq!(models.shadow.as_ref().unwrap().version, version());
        // Refused by its own pod: reported, and the template stays the spec's (the refusing
        // pods never become ready; the old ones keep serving).
        let resolved = resolve(
            &names,
            &spec,
            &files(CARD, MODEL),
            &[pod("m-old"), pod("m-new")],
            &live,
        )
        .unwrap();
        assert_eq!(resolved.model, Some(models));
        let held_back = resolved.held_back.unwrap();
        assert_eq!(
            held_back.refusal,
            ValidationError::ModelRefused {
                pod: "shop-risk-engine-m-new".into(),
                message: pod("m-new").message,
            }
        );
        assert_eq!(held_back.engine, HeldEngine::Models);
    }
}
