//! Where the client finds its server and token: `DBROKER_URL` and `DBROKER_TOKEN` (each beats the
//! file), else the login file `dbroker login` wrote, `login.json` in `$XDG_CONFIG_HOME/dbroker/`
//! (or `~/.config/dbroker/`). The file holds a token, so it is the user's only (0600, in a 0700
//! directory) and replaced atomically: a crash mid-write leaves the old file, never half of one.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ClientError;
use crate::secrets::Secret;

/// The login file's name in the config directory.
const LOGIN_FILE: &str = "login.json";

/// The login file as it is written.
#[derive(Serialize, Deserialize)]
struct LoginFile {
    url: String,
    token: String,
}

/// A server and the token to call it with (`Debug` prints the token `[redacted]`).
#[derive(Debug)]
pub struct Login {
    pub url: String,
    pub token: Secret,
}

/// dbroker's directory in the user's config directory: `$XDG_CONFIG_HOME/dbroker`, else
/// `$HOME/.config/dbroker`.
pub fn config_dir() -> Result<PathBuf, ClientError> {
    config_dir_of(std::env::var_os("XDG_CONFIG_HOME"), std::env::var_os("HOME"))
}

/// The XDG base directory rules: a relative (or empty) `XDG_CONFIG_HOME` is ignored.
fn config_dir_of(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Result<PathBuf, ClientError> {
    let absolute = |value: Option<OsString>| value.map(PathBuf::from).filter(|p| p.is_absolute());
    match (absolute(xdg_config_home), absolute(home)) {
        (Some(config), _) => Ok(config.join("dbroker")),
        (None, Some(home)) => Ok(home.join(".config").join("dbroker")),
        (None, None) => Err(ClientError::Usage(
            "neither XDG_CONFIG_HOME nor HOME is set: there is no config directory for the login file".into(),
        )),
    }
}

impl Login {
    /// The server and token to use: each from the environment if set, else from the login file.
    pub fn resolve() -> Result<Login, ClientError> {
        let env = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let (url, token) = (env("DBROKER_URL"), env("DBROKER_TOKEN"));
        if let (Some(url), Some(token)) = (&url, &token) {
            return Ok(Login { url: url.clone(), token: Secret::new(token.clone()) });
        }
        let saved = Self::read(&config_dir()?.join(LOGIN_FILE))?;
        match (url.or_else(|| saved.as_ref().map(|s| s.url.clone())), token.or(saved.map(|s| s.token))) {
            (Some(url), Some(token)) => Ok(Login { url, token: Secret::new(token) }),
            _ => Err(ClientError::Usage(
                "not logged in: run `dbroker login URL` (the token on standard input), or set DBROKER_URL and \
                 DBROKER_TOKEN"
                    .into(),
            )),
        }
    }

    fn read(path: &Path) -> Result<Option<LoginFile>, ClientError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                ClientError::Local(format!(
                    "{} is not a login file ({e}): run `dbroker login URL` again",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClientError::local(&format!("cannot read {}", path.display()), e)),
        }
    }

    /// Writes the login file: a temporary file of the user's only (tempfile makes it 0600), filled
    /// and synced, then renamed over the old one. Returns its path.
    pub fn save(&self) -> Result<PathBuf, ClientError> {
        let dir = config_dir()?;
        let failed =
            |e: std::io::Error| ClientError::local(&format!("cannot write the login file in {}", dir.display()), e);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(failed)?;
        let contents =
            serde_json::to_vec_pretty(&LoginFile { url: self.url.clone(), token: self.token.expose().into() })
                .map_err(|e| failed(e.into()))?;
        let mut file = tempfile::NamedTempFile::new_in(&dir).map_err(failed)?;
        // Said, not assumed: the file holds the token from its first byte.
        file.as_file().set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
        file.write_all(&contents).map_err(failed)?;
        file.as_file().sync_all().map_err(failed)?;
        let path = dir.join(LOGIN_FILE);
        file.persist(&path).map_err(|e| failed(e.error))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(xdg: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
        config_dir_of(xdg.map(OsString::from), home.map(OsString::from)).ok()
    }

    #[test]
    fn the_login_file_is_under_xdg_config_home_when_it_is_set() {
        assert_eq!(dir(Some("/cfg"), Some("/home/a")), Some("/cfg/dbroker".into()));
    }

    #[test]
    fn without_xdg_config_home_the_login_file_is_under_dot_config() {
        assert_eq!(dir(None, Some("/home/a")), Some("/home/a/.config/dbroker".into()));
    }

    #[test]
    fn a_relative_or_empty_xdg_config_home_is_ignored() {
        assert_eq!(dir(Some("cfg"), Some("/home/a")), Some("/home/a/.config/dbroker".into()));
        assert_eq!(dir(Some(""), Some("/home/a")), Some("/home/a/.config/dbroker".into()));
    }

    #[test]
    fn with_neither_there_is_no_login_file() {
        assert_eq!(dir(None, None), None);
    }
}
