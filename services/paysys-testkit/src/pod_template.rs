//! A container of a pod template, resolved the way a kubelet would, so that the same program
//! can run as a local process: its environment with every `valueFrom`/`envFrom` read from the
//! cluster's Secrets and ConfigMaps, and its mounted volumes written into a local folder.
//!
//! A local process cannot write to `/etc/...`, so each volume mount is materialised under the
//! folder given to [`resolve`], and [`LocalContainer::local_env`] rewrites every value that
//! points into a mount to the local copy. That path mapping is the only difference from what
//! the pod would see; everything else is exactly the template's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret, Volume};
use kube::{Api, Client};

/// One container of a pod template, ready to run locally.
#[derive(Debug, Clone)]
pub struct LocalContainer {
    pub name: String,
    pub image: String,
    /// `command` and `args` of the template (empty: the image's entrypoint).
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// The environment as the container would see it, in-container paths unchanged.
    pub env: BTreeMap<String, String>,
    /// `(mount path in the container, local folder or file holding its content)`.
    pub mounts: Vec<(String, PathBuf)>,
}

impl LocalContainer {
    /// The local path of in-container `path` when it lies in a mounted volume.
    pub fn local_path(&self, path: &str) -> Option<PathBuf> {
        self.mounts.iter().find_map(|(mount, local)| {
            let rest = path.strip_prefix(mount.as_str())?;
            if rest.is_empty() {
                Some(local.clone())
            } else {
                rest.strip_prefix('/').map(|rest| local.join(rest))
            }
        })
    }

    /// [`Self::env`] with every value that is a path into a mount replaced by its local copy.
    pub fn local_env(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .map(|(key, value)| {
                let value = self
                    .local_path(value)
                    .map_or_else(|| value.clone(), |path| path.display().to_string());
                (key.clone(), value)
            })
            .collect()
    }

    /// The last path segment of the image's repository (`ghcr.io/paysys/payments-api:0.1.0`
    /// gives `payments-api`): the binary a paysys image runs.
    pub fn image_program(&self) -> &str {
        let without_tag = self
            .image
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map_or(self.image.as_str(), |(repository, _)| repository);
        without_tag.rsplit('/').next().unwrap_or(without_tag)
    }
}

/// Resolves container `container` of `pod` (in `namespace`), writing its volumes under `dir`.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    pod: &PodSpec,
    container: &str,
    dir: &Path,
) -> anyhow::Result<LocalContainer> {
    let spec = pod
        .containers
        .iter()
        .find(|c| c.name == container)
        .ok_or_else(|| anyhow!("no container {container} in the pod template"))?;
    let reader = Reader {
        secrets: Api::namespaced(client.clone(), namespace),
        config_maps: Api::namespaced(client.clone(), namespace),
    };
    let env = reader.env(spec).await?;
    let mut mounts = Vec::new();
    for mount in spec.volume_mounts.iter().flatten() {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| anyhow!("mount {} names no volume", mount.name))?;
        let local = dir.join(&volume.name);
        if !local.exists() {
            std::fs::create_dir_all(&local)?;
            reader.write_volume(volume, &local).await?;
        }
        let local = match &mount.sub_path {
            Some(sub_path) if !sub_path.is_empty() => local.join(sub_path),
            _ => local,
        };
        mounts.push((mount.mount_path.trim_end_matches('/').to_owned(), local));
    }
    Ok(LocalContainer {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        command: spec.command.clone().unwrap_or_default(),
        args: spec.args.clone().unwrap_or_default(),
        env,
        mounts,
    })
}

struct Reader {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
}

impl Reader {
    async fn secret(&self, name: &str) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let secret = self
            .secrets
            .get(name)
            .await
            .with_context(|| format!("Secret {name}"))?;
        Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key, value.0))
            .collect())
    }

    async fn config_map(&self, name: &str) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let map = self
            .config_maps
            .get(name)
            .await
            .with_context(|| format!("ConfigMap {name}"))?;
        let text = map
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key, value.into_bytes()));
        let binary = map
            .binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key, value.0));
        Ok(text.chain(binary).collect())
    }

    /// `envFrom` first, then `env` (later entries win, as in a pod).
    async fn env(&self, container: &Container) -> anyhow::Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for source in container.env_from.iter().flatten() {
            let prefix = source.prefix.clone().unwrap_or_default();
            let data = match (&source.secret_ref, &source.config_map_ref) {
                (Some(secret), _) => self.secret(&secret.name).await?,
                (_, Some(map)) => self.config_map(&map.name).await?,
                _ => continue,
            };
            for (key, value) in data {
                env.insert(format!("{prefix}{key}"), String::from_utf8(value)?);
            }
        }
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) => {
                    let (data, key, optional, what) =
                        match (&from.secret_key_ref, &from.config_map_key_ref) {
                            (Some(r), _) => (
                                self.secret(&r.name).await,
                                &r.key,
                                r.optional,
                                format!("Secret {}", r.name),
                            ),
                            (_, Some(r)) => (
                                self.config_map(&r.name).await,
                                &r.key,
                                r.optional,
                                format!("ConfigMap {}", r.name),
                            ),
                            _ => bail!("env {}: only Secret and ConfigMap references", var.name),
                        };
                    match data.map(|mut data| data.remove(key)) {
                        Ok(Some(value)) => String::from_utf8(value)?,
                        _ if optional == Some(true) => continue,
                        Ok(None) => bail!("env {}: {what} has no key {key}", var.name),
                        Err(error) => return Err(error.context(format!("env {}", var.name))),
                    }
                }
                (None, None) => String::new(),
            };
            env.insert(var.name.clone(), value);
        }
        Ok(env)
    }

    /// Writes a Secret, ConfigMap or emptyDir volume's files into `dir`.
    async fn write_volume(&self, volume: &Volume, dir: &Path) -> anyhow::Result<()> {
        let (data, items) = if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            (self.secret(&name).await?, secret.items.clone())
        } else if let Some(map) = &volume.config_map {
            (self.config_map(&map.name).await?, map.items.clone())
        } else if volume.empty_dir.is_some() || volume.persistent_volume_claim.is_some() {
            // Scratch space, or storage that starts empty for a local run.
            return Ok(());
        } else {
            bail!("volume {}: unsupported kind", volume.name);
        };
        let files: Vec<(String, String)> = match items {
            Some(items) => items.into_iter().map(|i| (i.key, i.path)).collect(),
            None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        for (key, path) in files {
            let content = data
                .get(&key)
                .ok_or_else(|| anyhow!("volume {}: no key {key}", volume.name))?;
            let target = dir.join(&path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, content)
                .with_context(|| format!("write {}", target.display()))?;
        }
        Ok(())
    }
}
