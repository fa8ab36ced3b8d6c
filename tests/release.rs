//! What a release carries, kept in one place: the version is `Cargo.toml`'s, and the chart, the
//! changelog and the licence agree with it.

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{MANIFEST}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_chart_the_changelog_and_the_licence_follow_the_crate() {
    let version = env!("CARGO_PKG_VERSION");
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&read("charts/dhan-operator/Chart.yaml")).unwrap();
    assert_eq!(
        chart["version"].as_str(),
        Some(version),
        "Chart.yaml version"
    );
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(version),
        "Chart.yaml appVersion"
    );
    assert!(
        read("CHANGELOG.md").contains(&format!("\n## [{version}]")),
        "CHANGELOG.md has a section for {version}"
    );
    assert_eq!(env!("CARGO_PKG_LICENSE"), "Apache-2.0");
    assert_eq!(
        chart["annotations"]["licenses"].as_str(),
        Some("Apache-2.0")
    );
    assert!(
        read("LICENSE")
            .contains("Apache License\n                           Version 2.0, January 2004")
    );
}

/// The values a chart user can set, as documented in `values.yaml` (helm-docs style: a
/// `# -- text` comment, continued by `#` lines, right above the key): (dotted key, description).
fn documented_values(values: &str) -> Vec<(String, String)> {
    let mut documented = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut doc: Option<String> = None;
    for line in values.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if let Some(start) = text.strip_prefix("# -- ") {
            doc = Some(start.to_string());
            continue;
        }
        if let Some(more) = text.strip_prefix('#') {
            if let Some(doc) = doc.as_mut() {
                doc.push(' ');
                doc.push_str(more.trim());
            }
            continue;
        }
        if text.is_empty() || text.starts_with('-') {
            continue;
        }
        let Some((key, _)) = text.split_once(':') else {
            continue;
        };
        path.retain(|(level, _)| *level < indent);
        path.push((indent, key.trim().to_string()));
        if let Some(doc) = doc.take() {
            let dotted: Vec<&str> = path.iter().map(|(_, k)| k.as_str()).collect();
            documented.push((dotted.join("."), doc));
        }
    }
    documented
}

/// The chart README's values table: (key, description) per row.
fn values_table(readme: &str) -> Vec<(String, String)> {
    let table = readme
        .split("\n## Values\n")
        .nth(1)
        .expect("a Values section in the chart's README");
    table
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.strip_prefix("| `")?.splitn(2, "` |").collect();
            let (key, rest) = (cells.first()?, cells.get(1)?);
            // Default | Description |: the description is the last cell.
            let description = rest.trim_end_matches('|').trim();
            let description = description.split(" | ").nth(1)?.trim();
            Some((key.to_string(), description.to_string()))
        })
        .collect()
}

#[test]
fn the_chart_readme_lists_every_value_as_values_yaml_documents_it() {
    let documented = documented_values(&read("charts/dhan-operator/values.yaml"));
    assert!(documented.len() > 50, "{documented:?}");
    let table = values_table(&read("charts/dhan-operator/README.md"));
    let mut problems = Vec::new();
    for (key, description) in &documented {
        match table.iter().find(|(k, _)| k == key) {
            None => problems.push(format!("missing row: | `{key}` | … | {description} |")),
            Some((_, shown)) if shown != description => problems.push(format!(
                "`{key}`: the README says\n    {shown}\n  values.yaml says\n    {description}"
            )),
            Some(_) => {}
        }
    }
    for (key, _) in &table {
        if !documented.iter().any(|(k, _)| k == key) {
            problems.push(format!(
                "`{key}` is in the README's table but not documented in values.yaml"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `dhan-operator run`'s flags and their environment variables, from clap's own help.
fn run_flags() -> Vec<(String, Option<String>)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dhan-operator"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    for line in help.lines() {
        let text = line.trim();
        if let Some(flag) = text.strip_prefix("--") {
            let name = flag.split_whitespace().next().unwrap_or_default();
            if name != "help" {
                flags.push((format!("--{name}"), None));
            }
        } else if let Some(env) = text.strip_prefix("[env: ")
            && let Some(last) = flags.last_mut()
        {
            last.1 = env.split('=').next().map(str::to_string);
        }
    }
    flags
}

#[test]
fn the_operations_guide_lists_every_operator_flag_with_its_environment_variable() {
    let flags = run_flags();
    assert!(flags.len() > 30, "{flags:?}");
    let readme = read("docs/operations.md");
    let rows: Vec<(String, String)> = readme
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `--")?;
            let (flag, rest) = rest.split_once("` | ")?;
            // A flag without an environment variable shows `—`.
            let env = match rest.strip_prefix('`') {
                Some(quoted) => quoted.split('`').next()?,
                None => "",
            };
            Some((format!("--{flag}"), env.to_string()))
        })
        .collect();
    let mut problems = Vec::new();
    for (flag, env) in &flags {
        match rows.iter().find(|(f, _)| f == flag) {
            None => problems.push(format!("{flag} is not in docs/operations.md's flags table")),
            Some((_, shown)) if shown != env.as_deref().unwrap_or_default() => problems.push(
                format!("{flag}: docs/operations.md says {shown}, the code {env:?}"),
            ),
            Some(_) => {}
        }
    }
    for (flag, _) in &rows {
        if !flags.iter().any(|(f, _)| f == flag) {
            problems.push(format!(
                "{flag} is in docs/operations.md but `dhan-operator run` has no such flag"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Values whose contents are Kubernetes structures: any field of theirs is allowed.
const FREE_FORM: &[&str] = &[
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "metrics.serviceMonitor.tlsConfig",
];
const ENUMS: &[(&str, &[&str])] = &[
    ("logFormat", &["text", "json"]),
    ("metrics.clientIdLabel", &["plain", "hashed", "omit"]),
];

/// The JSON schema of one value, from its default: its type; for a group of the chart's own
/// options, no other keys (a misspelt key fails `helm install` instead of doing nothing).
fn schema_of(
    path: &str,
    value: &serde_yaml::Value,
    docs: &std::collections::BTreeMap<String, String>,
) -> serde_json::Value {
    use serde_json::json;
    use serde_yaml::Value as Yaml;
    let mut schema = match value {
        Yaml::Mapping(map) if map.is_empty() || FREE_FORM.contains(&path) => {
            json!({ "type": "object" })
        }
        Yaml::Mapping(map) => {
            let mut properties = serde_json::Map::new();
            for (key, value) in map {
                let key = key.as_str().expect("string keys");
                let child = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                properties.insert(key.to_string(), schema_of(&child, value, docs));
            }
            if path.is_empty() {
                // Set by a parent chart when this one is a dependency.
                properties.insert("global".into(), json!({ "type": "object" }));
            }
            json!({ "type": "object", "additionalProperties": false, "properties": properties })
        }
        Yaml::Sequence(_) => json!({ "type": "array" }),
        // An image tag is often written as a number (1.2).
        Yaml::String(_) if path == "image.tag" => json!({ "type": ["string", "number"] }),
        Yaml::String(_) => json!({ "type": "string" }),
        Yaml::Bool(_) => json!({ "type": "boolean" }),
        Yaml::Number(n) if n.is_f64() => json!({ "type": "number" }),
        Yaml::Number(_) => json!({ "type": "integer" }),
        _ => json!({}),
    };
    if let Some((_, allowed)) = ENUMS.iter().find(|(p, _)| *p == path) {
        schema["enum"] = json!(allowed);
    }
    if let Some(description) = docs.get(path) {
        schema["description"] = json!(description);
    }
    schema
}

/// `charts/dhan-operator/values.schema.json` is derived from `values.yaml`: the defaults' types
/// and documentation. `UPDATE_VALUES_SCHEMA=1 cargo test --test release` rewrites it.
#[test]
fn the_values_schema_follows_values_yaml() {
    let text = read("charts/dhan-operator/values.yaml");
    let values: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let docs = documented_values(&text).into_iter().collect();
    let mut schema = schema_of("", &values, &docs);
    schema["$schema"] = serde_json::json!("http://json-schema.org/draft-07/schema#");
    schema["title"] = serde_json::json!("Values of the dhan-operator chart");
    let expected = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    let path = format!("{MANIFEST}/charts/dhan-operator/values.schema.json");
    if std::env::var_os("UPDATE_VALUES_SCHEMA").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let found = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        found == expected,
        "charts/dhan-operator/values.schema.json is not what values.yaml gives: run \
         `UPDATE_VALUES_SCHEMA=1 cargo test --test release` and commit it"
    );
}

/// The release workflow builds with the make targets the tests exercise, on a tag that must be
/// the crate's version; its krew manifest names each archive with its checksum.
#[test]
fn the_release_workflow_uses_the_make_targets_and_writes_a_krew_manifest() {
    let workflow: serde_yaml::Value =
        serde_yaml::from_str(&read(".github/workflows/release.yml")).unwrap();
    assert_eq!(workflow["on"]["push"]["tags"][0].as_str(), Some("v*"));
    let text = read(".github/workflows/release.yml");
    let makefile = read("Makefile");
    for target in ["image", "plugin-archive"] {
        assert!(
            text.contains(&format!("make {target}")),
            "the workflow runs make {target}"
        );
        assert!(
            makefile.contains(&format!("\n{target}:")),
            "the Makefile has {target}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let sums = dir.path().join("SHA256SUMS");
    let version = env!("CARGO_PKG_VERSION");
    std::fs::write(
        &sums,
        format!(
            "{a}  kubectl-dhan_{version}_linux_amd64.tar.gz\n{b}  kubectl-dhan_{version}_linux_arm64.tar.gz\n",
            a = "a".repeat(64),
            b = "b".repeat(64)
        ),
    )
    .unwrap();
    let out = std::process::Command::new(format!("{MANIFEST}/hack/krew-manifest.sh"))
        .args([version, sums.to_str().unwrap(), "https://example.invalid/v"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["kind"].as_str(), Some("Plugin"));
    assert_eq!(
        manifest["spec"]["version"].as_str(),
        Some(format!("v{version}").as_str())
    );
    let platforms = manifest["spec"]["platforms"].as_sequence().unwrap();
    assert_eq!(platforms.len(), 2);
    assert_eq!(
        platforms[1]["sha256"].as_str(),
        Some("b".repeat(64).as_str())
    );
    assert_eq!(
        platforms[0]["uri"].as_str().map(str::to_owned),
        Some(format!(
            "https://example.invalid/v/kubectl-dhan_{version}_linux_amd64.tar.gz"
        ))
    );

    // A missing archive is an error, not a manifest without it.
    std::fs::write(&sums, "").unwrap();
    let out = std::process::Command::new(format!("{MANIFEST}/hack/krew-manifest.sh"))
        .args([version, sums.to_str().unwrap(), "https://example.invalid/v"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
