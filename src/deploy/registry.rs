//! Registry credentials for pulls and pushes: the `registry:` section of
//! wsctl.yaml for its server, else what the Docker CLI would use
//! (`~/.docker/config.json` or `$DOCKER_CONFIG`: `auths`, `credsStore`,
//! `credHelpers`, read by the docker_credential crate). The engine gets
//! them in its `X-Registry-Auth` header; wsctl never prints them (the
//! password is registered with `crate::secrets`).

use anyhow::Context;
use bollard::auth::DockerCredentials;

use crate::deploy::config::RegistrySettings;

/// How the Docker CLI names Docker Hub in `config.json`.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// The registry an image reference names: its first component when that
/// looks like a host (`registry.example.com/app`, `localhost:5000/app`),
/// else Docker Hub.
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => DOCKER_HUB.to_string(),
    }
}

/// Credentials for `image`'s registry, or `None` to go anonymous (a public
/// image, or a registry nobody logged in to). A configured login whose
/// password variable is not set is an error naming the variable.
pub fn credentials_for(
    image: &str,
    configured: &RegistrySettings,
) -> anyhow::Result<Option<DockerCredentials>> {
    let server = registry_of(image);
    if let Some(configured_server) = &configured.server
        && same_registry(configured_server, &server)
    {
        let password = match &configured.password_env {
            Some(name) => Some(std::env::var(name).map_err(|_| {
                crate::shared::input::ConfigError(format!(
                    "registry.password_env: {name} is not set in wsctl's environment"
                ))
            })?),
            None => None,
        };
        if let Some(password) = &password {
            crate::shared::secrets::register(password);
        }
        return Ok(Some(DockerCredentials {
            username: configured.username.clone(),
            password,
            serveraddress: Some(server),
            ..Default::default()
        }));
    }
    from_docker_config(&server)
}

/// `config.json`'s credential for `server`; none configured is `None`, a
/// helper that fails is an error (a login the user made must not be
/// silently dropped).
fn from_docker_config(server: &str) -> anyhow::Result<Option<DockerCredentials>> {
    use docker_credential::{CredentialRetrievalError, DockerCredential};
    if !docker_config_file().is_some_and(|file| file.exists()) {
        return Ok(None);
    }
    let credential = match docker_credential::get_credential(server) {
        Ok(credential) => credential,
        Err(
            CredentialRetrievalError::NoCredentialConfigured
            | CredentialRetrievalError::ConfigNotFound,
        ) => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("credentials for {server}"));
        }
    };
    Ok(Some(match credential {
        DockerCredential::UsernamePassword(username, password) => {
            crate::shared::secrets::register(&password);
            DockerCredentials {
                username: Some(username),
                password: Some(password),
                serveraddress: Some(server.to_string()),
                ..Default::default()
            }
        }
        DockerCredential::IdentityToken(token) => {
            crate::shared::secrets::register(&token);
            DockerCredentials {
                identitytoken: Some(token),
                serveraddress: Some(server.to_string()),
                ..Default::default()
            }
        }
    }))
}

/// Where the Docker CLI keeps its logins (as docker_credential reads it).
fn docker_config_file() -> Option<std::path::PathBuf> {
    let dir = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
    };
    Some(dir.join("config.json"))
}

/// `https://registry.example.com/` and `registry.example.com` are one.
fn same_registry(a: &str, b: &str) -> bool {
    let bare = |text: &str| {
        text.trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    };
    bare(a) == bare(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_the_first_component_when_it_is_a_host() {
        assert_eq!(
            registry_of("registry.example.com/team/app:1"),
            "registry.example.com"
        );
        assert_eq!(registry_of("127.0.0.1:5000/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("team/app:1"), DOCKER_HUB);
        assert_eq!(registry_of("nginx"), DOCKER_HUB);
    }

    #[test]
    fn the_configured_login_needs_its_variable() {
        let settings = RegistrySettings {
            server: Some("https://reg.example.com/".into()),
            username: Some("ci".into()),
            password_env: Some("WSCTL_TEST_UNSET_REGISTRY_PASSWORD".into()),
        };
        let error = credentials_for("reg.example.com/app:1", &settings)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("WSCTL_TEST_UNSET_REGISTRY_PASSWORD is not set"),
            "{error}"
        );
    }
}
