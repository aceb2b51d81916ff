//! Configuration: built-in defaults, then a TOML file, then `CONCLAVE_*`
//! environment variables, then `--set key=value` flags, each layer overriding
//! the one before.
//!
//! Every service describes its configuration as one `serde` struct whose
//! `Default` is the single documented place for its defaults. Overrides are
//! type-directed: the default value at a key says whether the text given in
//! the environment or on the command line is a string, a number, a boolean or
//! a list, so `CONCLAVE_PORTAL__PORT=8080` and `--set portal.hostname=8080`
//! both mean what they say.
//!
//! Environment variable names are `CONCLAVE_` followed by the key path in
//! upper case with `__` between tables: `manager.check_alive_interval` is
//! `CONCLAVE_MANAGER__CHECK_ALIVE_INTERVAL`. Variables naming a key the
//! service does not have are ignored, so one environment can serve several
//! services.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use toml::Value;

/// The `[cluster]` table of services that call the cluster manager without
/// being workers themselves.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterLink {
    /// host:port of the cluster manager. Default "127.0.0.1:7001".
    pub manager: String,
    /// Deadline of each call to the manager. Default 2000.
    pub rpc_timeout: u64,
}

impl Default for ClusterLink {
    fn default() -> Self {
        ClusterLink {
            manager: "127.0.0.1:7001".into(),
            rpc_timeout: 2000,
        }
    }
}

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "CONCLAVE_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid TOML in {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("unknown configuration key `{0}`")]
    UnknownKey(String),
    #[error("invalid value for `{key}` ({source_name}): expected {expected}, got `{value}`")]
    BadValue {
        key: String,
        source_name: String,
        expected: &'static str,
        value: String,
    },
    #[error("`--set` takes key=value, got `{0}`")]
    BadSet(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Load a service's configuration.
///
/// `file` is an optional TOML file (keys it names must exist in the defaults),
/// `env` the process environment (pass `std::env::vars()`), `sets` the
/// `key.path=value` flags from the command line.
pub fn load<T, E>(file: Option<&Path>, env: E, sets: &[String]) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
    E: IntoIterator<Item = (String, String)>,
{
    let mut tree =
        Value::try_from(T::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    if let Some(path) = file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let overlay: toml::Table = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: shown.clone(),
            source,
        })?;
        merge_table(&mut tree, &overlay, "")?;
    }
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        // Variables for keys this service does not have belong to another
        // service. Keys match case-insensitively (`MAXPROCESSES` = `maxProcesses`).
        if let Some(path) = resolve_env_path(&tree, rest) {
            set_path(&mut tree, &path, &value, &name)?;
        }
    }
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| ConfigError::BadSet(set.clone()))?;
        let path: Vec<String> = key.trim().split('.').map(str::to_string).collect();
        if lookup(&tree, &path).is_none() {
            return Err(ConfigError::UnknownKey(key.trim().to_string()));
        }
        set_path(&mut tree, &path, value, "--set")?;
    }
    T::deserialize(tree).map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// The configuration as TOML text (for `--print-config`).
pub fn to_toml<T: Serialize>(config: &T) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

fn merge_table(into: &mut Value, overlay: &toml::Table, prefix: &str) -> Result<(), ConfigError> {
    let Value::Table(target) = into else {
        return Err(ConfigError::UnknownKey(prefix.to_string()));
    };
    for (key, value) in overlay {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let slot = target
            .get_mut(key)
            .ok_or_else(|| ConfigError::UnknownKey(full.clone()))?;
        match (slot, value) {
            (slot @ Value::Table(_), Value::Table(sub)) => merge_table(slot, sub, &full)?,
            (slot, value) => {
                if !same_kind(slot, value) {
                    return Err(ConfigError::BadValue {
                        key: full,
                        source_name: "file".into(),
                        expected: kind_name(slot),
                        value: value.to_string(),
                    });
                }
                *slot = match (&*slot, value) {
                    // Keep the default's type: `ratio = 1` is still a float.
                    (Value::Float(_), Value::Integer(i)) => Value::Float(*i as f64),
                    _ => value.clone(),
                };
            }
        }
    }
    Ok(())
}

fn same_kind(default: &Value, given: &Value) -> bool {
    matches!(
        (default, given),
        (Value::String(_), Value::String(_))
            | (Value::Integer(_), Value::Integer(_))
            | (Value::Float(_), Value::Float(_) | Value::Integer(_))
            | (Value::Boolean(_), Value::Boolean(_))
            | (Value::Array(_), Value::Array(_))
            | (Value::Table(_), Value::Table(_))
    )
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "true or false",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
        Value::Datetime(_) => "a date",
    }
}

/// The configuration path an environment variable names, with the keys'
/// real spelling, if the service has it.
fn resolve_env_path(tree: &Value, rest: &str) -> Option<Vec<String>> {
    let mut node = tree;
    let mut path = Vec::new();
    for part in rest.split("__") {
        let (key, value) = node
            .as_table()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(part))?;
        path.push(key.clone());
        node = value;
    }
    Some(path)
}

fn lookup<'a>(tree: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(tree, |v, key| v.as_table()?.get(key))
}

fn set_path(tree: &mut Value, path: &[String], raw: &str, source: &str) -> Result<(), ConfigError> {
    let key = path.join(".");
    let mut slot = tree;
    for part in path {
        slot = slot
            .as_table_mut()
            .and_then(|t| t.get_mut(part))
            .ok_or_else(|| ConfigError::UnknownKey(key.clone()))?;
    }
    let bad = |expected| ConfigError::BadValue {
        key: key.clone(),
        source_name: source.to_string(),
        expected,
        value: raw.to_string(),
    };
    let raw_t = raw.trim();
    let parsed = match slot {
        Value::String(_) => Value::String(raw.to_string()),
        Value::Integer(_) => Value::Integer(raw_t.parse().map_err(|_| bad("an integer"))?),
        Value::Float(_) => Value::Float(raw_t.parse().map_err(|_| bad("a number"))?),
        Value::Boolean(_) => Value::Boolean(match raw_t {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(bad("true or false")),
        }),
        Value::Array(_) => {
            if raw_t.starts_with('[') {
                let doc: toml::Table =
                    toml::from_str(&format!("v = {raw_t}")).map_err(|_| bad("a list"))?;
                doc.get("v").cloned().ok_or_else(|| bad("a list"))?
            } else {
                Value::Array(
                    raw_t
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                )
            }
        }
        Value::Table(_) | Value::Datetime(_) => return Err(bad("a single value")),
    };
    *slot = parsed;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Sample {
        listen: String,
        manager: Inner,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Inner {
        interval_ms: u64,
        ratio: f64,
        enabled: bool,
        names: Vec<String>,
    }
    impl Default for Sample {
        fn default() -> Self {
            Sample {
                listen: "0.0.0.0:1".into(),
                manager: Inner::default(),
            }
        }
    }
    impl Default for Inner {
        fn default() -> Self {
            Inner {
                interval_ms: 1000,
                ratio: 0.5,
                enabled: false,
                names: vec![],
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_when_nothing_given() {
        let s: Sample = load(None, env(&[]), &[]).unwrap();
        assert_eq!(s, Sample::default());
    }

    #[test]
    fn layers_override_in_order() {
        let dir = std::env::temp_dir().join(format!("conclave-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "listen = \"1.2.3.4:5\"\n[manager]\ninterval_ms = 7\nratio = 1\n",
        )
        .unwrap();
        let s: Sample = load(
            Some(&file),
            env(&[
                ("CONCLAVE_MANAGER__INTERVAL_MS", "9"),
                ("CONCLAVE_MANAGER__NAMES", "a, b"),
                ("CONCLAVE_MANAGER__ENABLED", "true"),
                ("CONCLAVE_OTHER_SERVICE__KEY", "ignored"),
                ("PATH", "/bin"),
            ]),
            &["manager.enabled=true".into(), "manager.ratio=0.25".into()],
        )
        .unwrap();
        assert_eq!(s.listen, "1.2.3.4:5");
        assert_eq!(s.manager.interval_ms, 9);
        assert_eq!(s.manager.ratio, 0.25);
        assert!(s.manager.enabled);
        assert_eq!(s.manager.names, vec!["a", "b"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn environment_keys_match_case_insensitively() {
        #[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
        #[serde(default)]
        struct Camel {
            #[serde(rename = "maxProcesses")]
            max_processes: i64,
        }
        let c: Camel = load(None, env(&[("CONCLAVE_MAXPROCESSES", "8")]), &[]).unwrap();
        assert_eq!(c.max_processes, 8);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = load::<Sample, _>(None, env(&[("CONCLAVE_MANAGER__INTERVAL_MS", "soon")]), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("manager.interval_ms"), "{err}");
        let err = load::<Sample, _>(None, env(&[]), &["manager.nope=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("manager.nope"), "{err}");
        let err = load::<Sample, _>(None, env(&[]), &["novalue".into()]).unwrap_err();
        assert!(matches!(err, ConfigError::BadSet(_)));
    }

    #[test]
    fn file_with_unknown_key_or_wrong_type_is_refused() {
        let dir = std::env::temp_dir().join(format!("conclave-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[manager]\nintervalms = 7\n").unwrap();
        let err = load::<Sample, _>(Some(&file), env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("manager.intervalms"), "{err}");
        std::fs::write(&file, "[manager]\ninterval_ms = \"7\"\n").unwrap();
        let err = load::<Sample, _>(Some(&file), env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("manager.interval_ms"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
