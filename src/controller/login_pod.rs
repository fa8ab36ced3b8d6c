//! What a platform team sets on every login Pod, from a file (`--login-pod-options`, the chart's
//! `browserLogin.pod`): where it may run, which pull secrets and metadata it carries, its
//! containers' resources, and an egress proxy for Chromium. Read once at start; a file that does
//! not parse, names an unknown key or takes over a label the operator sets stops the operator
//! with the reason.

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use super::output::{COMPONENT_LABEL, LOGIN_FOR_LABEL, LOGIN_REASON_ANNOTATION, MANAGED_BY_LABEL};

/// Options for login Pods; every field is optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginPodOptions {
    #[serde(default)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    pub priority_class_name: Option<String>,
    /// Extra labels on the Job and its Pod (not the operator's own).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the Job and its Pod (not the operator's own).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub resources: LoginResources,
    pub proxy: Option<Proxy>,
}

/// Resources of the two containers, replacing the operator's defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginResources {
    pub login: Option<ResourceRequirements>,
    pub chromium: Option<ResourceRequirements>,
}

/// An HTTP(S) proxy Chromium reaches Dhan through.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proxy {
    /// `http://host:port` (or `https://`).
    pub url: String,
    /// Hosts not to proxy, comma-separated; the Pod's loopback is always among them.
    #[serde(default)]
    pub no_proxy: String,
    /// Where the proxy is, for the login NetworkPolicy's egress rule to its port (default: the
    /// addresses port 443 may reach, which leave out private ranges).
    #[serde(default)]
    pub cidrs: Vec<String>,
}

impl Proxy {
    /// The proxy's port (the URL's, else its scheme's).
    pub fn port(&self) -> u16 {
        let url = url::Url::parse(&self.url).expect("validated at load");
        url.port_or_known_default().unwrap_or(80)
    }
}

/// Why an options file was refused.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Invalid { path: String, detail: String },
}

/// Labels and annotations the operator sets on login Jobs and Pods itself.
const RESERVED: &[&str] = &[
    LOGIN_FOR_LABEL,
    COMPONENT_LABEL,
    MANAGED_BY_LABEL,
    LOGIN_REASON_ANNOTATION,
];

impl LoginPodOptions {
    /// Reads and checks the options in the YAML file at `path`.
    pub fn load(path: &str) -> Result<LoginPodOptions, OptionsError> {
        let text = std::fs::read_to_string(path).map_err(|source| OptionsError::Read {
            path: path.to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|detail| OptionsError::Invalid {
            path: path.to_string(),
            detail,
        })
    }

    /// Parses and checks options given as YAML.
    pub fn parse(text: &str) -> Result<LoginPodOptions, String> {
        if text.trim().is_empty() {
            return Ok(LoginPodOptions::default());
        }
        let options: LoginPodOptions = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let keys = options.labels.keys().chain(options.annotations.keys());
        if let Some(key) = keys.into_iter().find(|k| RESERVED.contains(&k.as_str())) {
            return Err(format!(
                "{key} is set by the operator and cannot be overridden"
            ));
        }
        if let Some(proxy) = &options.proxy {
            let url = url::Url::parse(&proxy.url)
                .map_err(|e| format!("proxy.url {:?}: {e}", proxy.url))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(format!(
                    "proxy.url {:?}: an http:// or https:// URL with a host",
                    proxy.url
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(
                    "proxy.url: credentials in the URL would be shown in the Job; \
                            use a proxy that needs none from the cluster"
                        .into(),
                );
            }
            for cidr in &proxy.cidrs {
                if !is_cidr(cidr) {
                    return Err(format!(
                        "proxy.cidrs {cidr:?}: not an address range (10.0.0.0/8)"
                    ));
                }
            }
        }
        Ok(options)
    }

    /// Sets the options on a login Job built by `login_job` (as JSON).
    pub fn apply(&self, job: &mut Value) {
        let extend = |map: &mut Value, extra: &BTreeMap<String, String>| {
            if extra.is_empty() {
                return;
            }
            if map.is_null() {
                *map = json!({});
            }
            for (k, v) in extra {
                map[k] = json!(v);
            }
        };
        extend(&mut job["metadata"]["labels"], &self.labels);
        extend(&mut job["metadata"]["annotations"], &self.annotations);
        let template = &mut job["spec"]["template"];
        extend(&mut template["metadata"]["labels"], &self.labels);
        extend(&mut template["metadata"]["annotations"], &self.annotations);
        let spec = &mut template["spec"];
        if !self.image_pull_secrets.is_empty() {
            spec["imagePullSecrets"] = json!(self.image_pull_secrets);
        }
        if !self.node_selector.is_empty() {
            spec["nodeSelector"] = json!(self.node_selector);
        }
        if !self.tolerations.is_empty() {
            spec["tolerations"] = json!(self.tolerations);
        }
        if let Some(affinity) = &self.affinity {
            spec["affinity"] = json!(affinity);
        }
        if let Some(class) = &self.priority_class_name {
            spec["priorityClassName"] = json!(class);
        }
        let Some(containers) = spec["containers"].as_array_mut() else {
            return;
        };
        for container in containers {
            let name = container["name"].as_str().unwrap_or_default().to_string();
            let resources = match name.as_str() {
                "login" => &self.resources.login,
                "chromium" => &self.resources.chromium,
                _ => &None,
            };
            if let Some(resources) = resources {
                container["resources"] = json!(resources);
            }
            if let (Some(proxy), "chromium") = (&self.proxy, name.as_str()) {
                let mut bypass = vec!["127.0.0.1".to_string(), "localhost".to_string()];
                bypass.extend(
                    proxy
                        .no_proxy
                        .split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .map(str::to_string),
                );
                let bypass = bypass.join(",");
                if let Some(env) = container["env"].as_array_mut() {
                    for var in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
                        env.push(json!({ "name": var, "value": proxy.url }));
                    }
                    for var in ["NO_PROXY", "no_proxy"] {
                        env.push(json!({ "name": var, "value": bypass }));
                    }
                }
                // Chromium's own flags, whatever its image's environment handling.
                if let Some(args) = container["args"].as_array_mut() {
                    args.push(json!(format!("--proxy-server={}", proxy.url)));
                    args.push(json!(format!(
                        "--proxy-bypass-list={}",
                        bypass.replace(',', ";")
                    )));
                }
            }
        }
    }
}

/// Whether `text` is an IPv4 or IPv6 range: an address, `/`, a prefix length that fits it.
fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}
