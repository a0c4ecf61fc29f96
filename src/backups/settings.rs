//! `[backups]` in the configuration file: the targets, the default one, the age recipient every
//! backup is encrypted to and the identity that reads them back, and the size limit of imports.
//! Checked once at start-up into typed values; every mistake is an error naming its key.
//!
//! ```toml
//! [backups]
//! default_target = "offsite"
//! recipient = "age1..."                       # public key: every backup is encrypted to it
//! identity_file = "/etc/dbroker/backup.key"   # private key, needed only to restore and verify
//! import_max_bytes = 1073741824               # optional: the largest import (1 GiB by default)
//!
//! [backups.targets.local]
//! kind = "dir"
//! path = "/var/lib/dbroker/backups"
//!
//! [backups.targets.offsite]
//! kind = "s3"
//! endpoint = "https://s3.example.net"
//! region = "us-east-1"
//! bucket = "dbroker"
//! prefix = "prod/"
//! path_style = true
//! access_key_id = "env:S3_ACCESS_KEY_ID"      # env:NAME or file:PATH, never the secret itself
//! secret_access_key = "env:S3_SECRET_ACCESS_KEY"
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::seal::{Identity, Recipient};
use crate::secrets::Secret;

/// The largest import when `import_max_bytes` is not set: 1 GiB, a large development database,
/// which an upload over a LAN sends in seconds.
pub const DEFAULT_IMPORT_MAX_BYTES: u64 = 1 << 30;

/// S3's region when the file names none: what most S3-compatible services accept.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// `[backups]` as the file writes it; [`BackupSettings::from_file`] checks it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackups {
    pub default_target: Option<String>,
    pub recipient: String,
    pub identity_file: Option<PathBuf>,
    pub import_max_bytes: Option<u64>,
    #[serde(default)]
    pub targets: BTreeMap<String, FileTarget>,
}

/// `[backups.targets.NAME]` as the file writes it.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum FileTarget {
    Dir {
        path: PathBuf,
    },
    S3 {
        endpoint: String,
        region: Option<String>,
        bucket: String,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        path_style: bool,
        access_key_id: String,
        secret_access_key: String,
    },
}

/// `[backups]`, checked: backups are configured.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// Where a backup goes when its request names no target; one of `targets`.
    pub default_target: String,
    pub targets: BTreeMap<String, TargetSpec>,
    /// Every backup is encrypted to it, so dbroker needs no secret to write one.
    pub recipient: Recipient,
    /// Reads backups back (restore, verify); `None`: backups are written but not read.
    pub identity: Option<Identity>,
    /// The largest dump an import accepts, bytes.
    pub import_max_bytes: u64,
}

/// One target, checked, its credentials read.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// A directory on this host (or a mount): one file per object.
    Dir {
        path: PathBuf,
    },
    S3(S3Spec),
}

/// An S3-compatible bucket (or a prefix in one).
#[derive(Debug, Clone)]
pub struct S3Spec {
    /// `https://host[:port]`, or `http://` for a service on a trusted network.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Put in front of every object's name: `prod/` keeps several deployments in one bucket.
    pub prefix: String,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`: what most
    /// S3-compatible services other than AWS need.
    pub path_style: bool,
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
}

impl BackupSettings {
    /// Checks `[backups]`: reads the credentials (from the environment or their files) and the
    /// identity file once, so that a mistake stops start-up rather than the first backup.
    pub fn from_file(file: &FileBackups) -> Result<BackupSettings, String> {
        let recipient: Recipient = file.recipient.parse().map_err(|e| format!("backups.recipient: {e}"))?;
        if file.targets.is_empty() {
            return Err("backups.targets: name at least one target, `[backups.targets.NAME]` with kind = \"dir\" \
                        or kind = \"s3\""
                .into());
        }
        let default_target = match (&file.default_target, file.targets.len()) {
            (Some(name), _) => name.clone(),
            (None, 1) => file.targets.keys().next().expect("one target").clone(),
            (None, _) => {
                return Err("backups.default_target: there are several targets; say which is the default".into());
            }
        };
        if !file.targets.contains_key(&default_target) {
            return Err(format!(
                "backups.default_target: {default_target:?} is not one of the targets ({})",
                file.targets.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let targets = file
            .targets
            .iter()
            .map(|(name, target)| Ok((name.clone(), TargetSpec::from_file(name, target)?)))
            .collect::<Result<_, String>>()?;
        let identity = match &file.identity_file {
            Some(path) => {
                let text = read_private_file(path).map_err(|e| format!("backups.identity_file: {e}"))?;
                let identity =
                    Identity::parse(&text).map_err(|e| format!("backups.identity_file: {}: {e}", path.display()))?;
                // A key that cannot read what is written now is a mistake made today that would be
                // found on the day of a restore.
                if !identity.reads(&recipient) {
                    return Err(format!(
                        "backups.identity_file: {} holds no private key of the recipient {recipient}: backups \
                         encrypted to it could not be restored",
                        path.display()
                    ));
                }
                Some(identity)
            }
            None => None,
        };
        let import_max_bytes = file.import_max_bytes.unwrap_or(DEFAULT_IMPORT_MAX_BYTES);
        if import_max_bytes == 0 {
            return Err("backups.import_max_bytes: 0 would refuse every import; give a size in bytes".into());
        }
        Ok(BackupSettings { default_target, targets, recipient, identity, import_max_bytes })
    }
}

impl TargetSpec {
    fn from_file(name: &str, target: &FileTarget) -> Result<TargetSpec, String> {
        let key = |field: &str| format!("backups.targets.{name}.{field}");
        match target {
            FileTarget::Dir { path } => {
                if !path.is_absolute() {
                    return Err(format!("{}: {} is not an absolute path", key("path"), path.display()));
                }
                Ok(TargetSpec::Dir { path: path.clone() })
            }
            FileTarget::S3 { endpoint, region, bucket, prefix, path_style, access_key_id, secret_access_key } => {
                let Some(authority) = endpoint.strip_prefix("https://").or_else(|| endpoint.strip_prefix("http://"))
                else {
                    return Err(format!("{}: {endpoint:?} is not an http:// or https:// URL", key("endpoint")));
                };
                // Credentials in the URL would be printed with every error that names the endpoint.
                if authority.is_empty() || authority.split('/').next().is_some_and(|host| host.contains('@')) {
                    return Err(format!(
                        "{}: give the host (and port) only; credentials belong in access_key_id and \
                         secret_access_key",
                        key("endpoint")
                    ));
                }
                if bucket.is_empty() {
                    return Err(format!("{}: name the bucket", key("bucket")));
                }
                if prefix.starts_with('/') || prefix.split('/').any(|segment| segment == "..") {
                    return Err(format!("{}: {prefix:?} must not start with / nor hold ..", key("prefix")));
                }
                Ok(TargetSpec::S3(S3Spec {
                    endpoint: endpoint.trim_end_matches('/').to_string(),
                    region: region.clone().unwrap_or_else(|| DEFAULT_S3_REGION.into()),
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    path_style: *path_style,
                    access_key_id: credential(&key("access_key_id"), access_key_id)?,
                    secret_access_key: credential(&key("secret_access_key"), secret_access_key)?,
                }))
            }
        }
    }
}

/// A credential from where `reference` says: `env:NAME` or `file:PATH`. Anything else is taken
/// for the secret itself and refused, without repeating it: a configuration file is read by
/// more people and tools than a secret may be.
fn credential(key: &str, reference: &str) -> Result<Secret, String> {
    let value = if let Some(name) = reference.strip_prefix("env:") {
        std::env::var(name).map_err(|_| format!("{key}: the environment variable {name} is not set"))?
    } else if let Some(path) = reference.strip_prefix("file:") {
        read_private_file(Path::new(path)).map_err(|e| format!("{key}: {e}"))?.trim().to_string()
    } else {
        return Err(format!(
            "{key}: write where the credential is, not the credential itself: `env:NAME` (an environment \
             variable, for example from systemd's EnvironmentFile=) or `file:PATH` (a file only dbroker's \
             user may read)"
        ));
    };
    if value.is_empty() {
        return Err(format!("{key}: {reference} is empty"));
    }
    Ok(Secret::new(value))
}

/// A file's contents, if only dbroker's user may read it: a secret others can read is refused,
/// as ssh refuses such a private key (and as the master key file is).
fn read_private_file(path: &Path) -> Result<String, String> {
    let error = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(error)?;
    let mode = file.metadata().map_err(error)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} may be read by other users than dbroker's (mode {mode:04o}): make it private with `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(error)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[backups]` from TOML, checked.
    fn settings(text: &str) -> Result<BackupSettings, String> {
        #[derive(Deserialize)]
        struct File {
            backups: FileBackups,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        BackupSettings::from_file(&file.backups)
    }

    fn private_file(dir: &Path, name: &str, contents: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn recipient_of(identity: &age::x25519::Identity) -> String {
        identity.to_public().to_string()
    }

    #[test]
    fn the_issues_example_with_a_file_credential_gives_typed_targets_and_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let key = age::x25519::Identity::generate();
        let identity = private_file(dir.path(), "backup.key", &format!("# a key\n{}\n", secrecy_text(&key)), 0o600);
        let secret = private_file(dir.path(), "s3.secret", "s3cr3t-value\n", 0o600);
        let access = private_file(dir.path(), "s3.id", "AKIDEXAMPLE\n", 0o600);
        let text = format!(
            "[backups]\ndefault_target = \"offsite\"\nrecipient = \"{}\"\nidentity_file = \"{}\"\n\
             [backups.targets.local]\nkind = \"dir\"\npath = \"/var/lib/dbroker/backups\"\n\
             [backups.targets.offsite]\nkind = \"s3\"\nendpoint = \"https://s3.example.net/\"\n\
             region = \"eu-west-1\"\nbucket = \"dbroker\"\nprefix = \"prod/\"\npath_style = true\n\
             access_key_id = \"file:{}\"\nsecret_access_key = \"file:{}\"\n",
            recipient_of(&key),
            identity.display(),
            access.display(),
            secret.display()
        );

        let settings = settings(&text).unwrap();

        assert_eq!(settings.default_target, "offsite");
        assert_eq!(settings.import_max_bytes, DEFAULT_IMPORT_MAX_BYTES);
        assert!(
            matches!(&settings.targets["local"], TargetSpec::Dir { path } if path == Path::new("/var/lib/dbroker/backups"))
        );
        let TargetSpec::S3(s3) = &settings.targets["offsite"] else { panic!("offsite is S3") };
        assert_eq!(
            (s3.endpoint.as_str(), s3.region.as_str(), s3.bucket.as_str(), s3.prefix.as_str(), s3.path_style),
            ("https://s3.example.net", "eu-west-1", "dbroker", "prod/", true)
        );
        assert_eq!((s3.access_key_id.expose(), s3.secret_access_key.expose()), ("AKIDEXAMPLE", "s3cr3t-value"));
        assert!(settings.identity.is_some());
        assert!(!format!("{settings:?}").contains("s3cr3t-value"), "no secret in the settings' Debug");
    }

    fn secrecy_text(identity: &age::x25519::Identity) -> String {
        use age::secrecy::ExposeSecret;
        identity.to_string().expose_secret().to_string()
    }

    #[test]
    fn a_literal_secret_is_refused_naming_the_key_saying_how_to_write_it_and_not_repeating_it() {
        let key = age::x25519::Identity::generate();
        let text = format!(
            "[backups]\nrecipient = \"{}\"\n[backups.targets.offsite]\nkind = \"s3\"\nendpoint = \"https://s3\"\n\
             bucket = \"b\"\naccess_key_id = \"env:PATH\"\nsecret_access_key = \"wJalrXUtnFEMI/K7MDENG\"\n",
            recipient_of(&key)
        );

        let refused = settings(&text).unwrap_err();

        assert!(refused.contains("backups.targets.offsite.secret_access_key"), "{refused}");
        assert!(refused.contains("env:NAME") && refused.contains("file:PATH"), "{refused}");
        assert!(!refused.contains("wJalrXUtnFEMI"), "{refused}");
    }

    #[test]
    fn an_identity_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = age::x25519::Identity::generate();
        let identity = private_file(dir.path(), "backup.key", &secrecy_text(&key), 0o644);
        let text = format!(
            "[backups]\nrecipient = \"{}\"\nidentity_file = \"{}\"\n[backups.targets.local]\nkind = \"dir\"\n\
             path = \"/srv/backups\"\n",
            recipient_of(&key),
            identity.display()
        );

        let refused = settings(&text).unwrap_err();

        assert!(refused.contains("backups.identity_file") && refused.contains("chmod 600"), "{refused}");
    }

    #[test]
    fn an_identity_that_cannot_read_the_recipients_backups_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = age::x25519::Identity::generate();
        let identity = private_file(dir.path(), "backup.key", &secrecy_text(&other), 0o600);
        let text = format!(
            "[backups]\nrecipient = \"{}\"\nidentity_file = \"{}\"\n[backups.targets.local]\nkind = \"dir\"\n\
             path = \"/srv/backups\"\n",
            recipient_of(&age::x25519::Identity::generate()),
            identity.display()
        );

        let refused = settings(&text).unwrap_err();

        assert!(refused.contains("no private key of the recipient"), "{refused}");
    }

    #[test]
    fn mistakes_are_refused_naming_their_key() {
        let recipient = recipient_of(&age::x25519::Identity::generate());
        let dir_target = "[backups.targets.a]\nkind = \"dir\"\npath = \"/srv/a\"\n";
        let cases = [
            ("recipient = \"age1nope\"\n".to_string() + dir_target, "backups.recipient"),
            (format!("recipient = \"{recipient}\"\n"), "backups.targets"),
            (format!("recipient = \"{recipient}\"\ndefault_target = \"b\"\n{dir_target}"), "backups.default_target"),
            (
                format!("recipient = \"{recipient}\"\n[backups.targets.a]\nkind = \"dir\"\npath = \"rel\"\n"),
                "backups.targets.a.path",
            ),
            (format!("recipient = \"{recipient}\"\nimport_max_bytes = 0\n{dir_target}"), "backups.import_max_bytes"),
            (
                format!(
                    "recipient = \"{recipient}\"\n[backups.targets.s]\nkind = \"s3\"\nendpoint = \"s3.example.net\"\n\
                     bucket = \"b\"\naccess_key_id = \"env:PATH\"\nsecret_access_key = \"env:PATH\"\n"
                ),
                "backups.targets.s.endpoint",
            ),
            (
                format!(
                    "recipient = \"{recipient}\"\n[backups.targets.s]\nkind = \"s3\"\nendpoint = \"https://s3\"\n\
                     bucket = \"b\"\naccess_key_id = \"env:DBROKER_TEST_NO_SUCH_VARIABLE\"\nsecret_access_key = \"env:PATH\"\n"
                ),
                "DBROKER_TEST_NO_SUCH_VARIABLE is not set",
            ),
            (format!("recipient = \"{recipient}\"\n[backups.targets.a]\nkind = \"tape\"\n"), "tape"),
            (
                format!("recipient = \"{recipient}\"\n[backups.targets.a]\nkind = \"dir\"\npath = \"/a\"\npaht = 1\n"),
                "paht",
            ),
        ];
        for (text, expected) in cases {
            let refused = settings(&format!("[backups]\n{text}")).expect_err(&text);

            assert!(refused.contains(expected), "{text:?} gave {refused:?}");
        }
    }
}
