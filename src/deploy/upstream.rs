//! The Nginx upstream: rendered from `templates/upstream.conf.j2` (or the
//! stack's own template) with minijinja. Its first line names the colour
//! (what the file on disk says), and its `X-Wsctl-Live` header line makes
//! every answer of Nginx name the colour of the configuration it has loaded
//! (what Nginx serves): `nginx.rs` compares the two.

use minijinja::{Environment, context};

use crate::deploy::config::Color;

pub const DEFAULT_TEMPLATE: &str = include_str!("../../templates/upstream.conf.j2");
/// The first line of every rendered upstream names the live colour.
const MARKER: &str = "# wsctl live colour: ";
/// The response header naming the loaded colour.
pub const HEADER: &str = "X-Wsctl-Live";

/// The access policy rendered next to the upstream: who may read the
/// private endpoints, and which proxies name the real client.
#[derive(Debug, Clone, Default)]
pub struct Access<'a> {
    pub private_networks: &'a [String],
    pub trusted_proxies: &'a [String],
    pub unlimited_networks: &'a [String],
    /// `Strict-Transport-Security` on every answer (wsctl.yaml `tls.hsts`).
    pub hsts: bool,
}

pub fn render(
    template: &str,
    color: Color,
    hosts: &[String],
    port: u16,
    access: &Access<'_>,
) -> anyhow::Result<String> {
    let servers: Vec<(String, Option<u32>)> =
        hosts.iter().map(|host| (host.clone(), None)).collect();
    render_weighted(template, color, &servers, port, access)
}

/// Like `render`, with a weight per server: a canary, where both colours
/// share the upstream. `color` is the colour that keeps the larger share
/// (what `X-Wsctl-Live` names). Weighted upstreams balance round robin, so
/// that the weights are the shares of new connections (`least_conn` would
/// send every new connection to the canary until it held its share).
pub fn render_weighted(
    template: &str,
    color: Color,
    weighted: &[(String, Option<u32>)],
    port: u16,
    access: &Access<'_>,
) -> anyhow::Result<String> {
    let canary = weighted.iter().any(|(_, weight)| weight.is_some());
    let servers: Vec<String> = weighted
        .iter()
        .map(|(host, weight)| match weight {
            Some(weight) => format!("{host}:{port} weight={weight}"),
            None => format!("{host}:{port}"),
        })
        .collect();
    let host = weighted
        .first()
        .map(|(host, _)| host.as_str())
        .unwrap_or_default();
    let mut environment = Environment::new();
    environment.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    environment.add_template("upstream", template)?;
    let rendered = environment.get_template("upstream")?.render(context! {
        color => color,
        host => host,
        port => port,
        servers => servers,
        canary => canary,
        private_networks => access.private_networks,
        trusted_proxies => access.trusted_proxies,
        unlimited_networks => access.unlimited_networks,
        hsts => access.hsts,
        rendered_at => crate::shared::time::now_rfc3339(),
    })?;
    anyhow::ensure!(
        live_color(&rendered) == Some(color),
        "the upstream template must start with `{MARKER}{{{{ color }}}}`"
    );
    anyhow::ensure!(
        rendered.contains(&format!("add_header {HEADER} {color} always;")),
        "the upstream template must contain `add_header {HEADER} {{{{ color }}}} always;`"
    );
    // nginx.conf's rule for /metrics and /status reads this variable.
    // nginx.conf's per-address limits key on this one.
    anyhow::ensure!(
        rendered.contains("geo $wsctl_unlimited"),
        "the upstream template must define `geo $wsctl_unlimited` (see templates/upstream.conf.j2)"
    );
    anyhow::ensure!(
        rendered.contains("geo $wsctl_private"),
        "the upstream template must define `geo $wsctl_private` (see templates/upstream.conf.j2)"
    );
    Ok(rendered)
}

/// The colour a rendered upstream sends traffic to.
pub fn live_color(upstream: &str) -> Option<Color> {
    upstream
        .lines()
        .find_map(|line| line.strip_prefix(MARKER))
        .and_then(Color::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_names_the_colour_and_the_server() {
        let networks = ["127.0.0.0/8".to_string(), "10.1.0.0/16".to_string()];
        let proxies = ["192.0.2.10".to_string()];
        let access = Access {
            private_networks: &networks,
            trusted_proxies: &proxies,
            unlimited_networks: &networks[1..],
            hsts: false,
        };
        let text = render(
            DEFAULT_TEMPLATE,
            Color::Green,
            &["app_green".into()],
            8000,
            &access,
        )
        .unwrap();
        assert!(text.contains("\n    10.1.0.0/16 1;\n"), "{text}");
        assert!(
            text.contains("geo $wsctl_unlimited {\n    default 0;\n    10.1.0.0/16 1;\n}"),
            "{text}"
        );
        assert!(
            text.contains("\nset_real_ip_from 192.0.2.10;\nreal_ip_header X-Forwarded-For;"),
            "{text}"
        );
        let without = render(
            DEFAULT_TEMPLATE,
            Color::Green,
            &["h".into()],
            1,
            &Access::default(),
        )
        .unwrap();
        assert!(!without.contains("real_ip_header"), "{without}");
        assert_eq!(live_color(&text), Some(Color::Green));
        assert!(text.contains("server app_green:8000;"), "{text}");
        assert!(
            text.contains("add_header X-Wsctl-Live green always;"),
            "{text}"
        );
    }

    #[test]
    fn every_replica_is_a_server_with_least_conn() {
        let hosts = ["app_blue_1".to_string(), "app_blue_2".to_string()];
        let text = render(
            DEFAULT_TEMPLATE,
            Color::Blue,
            &hosts,
            8000,
            &Access::default(),
        )
        .unwrap();
        assert!(text.contains("least_conn;"), "{text}");
        assert!(text.contains("server app_blue_1:8000;"), "{text}");
        assert!(text.contains("server app_blue_2:8000;"), "{text}");
    }

    #[test]
    fn a_template_with_an_unknown_variable_or_no_marker_is_refused() {
        assert!(
            render(
                "{{ nope }}",
                Color::Blue,
                &["h".into()],
                1,
                &Access::default()
            )
            .is_err()
        );
        let no_marker = "upstream x { server {{ host }}:{{ port }}; }";
        assert!(render(no_marker, Color::Blue, &["h".into()], 1, &Access::default()).is_err());
        let no_header =
            "# wsctl live colour: {{ color }}\nupstream x { server {{ host }}:{{ port }}; }";
        let error =
            render(no_header, Color::Blue, &["h".into()], 1, &Access::default()).unwrap_err();
        assert!(error.to_string().contains("X-Wsctl-Live"), "{error}");
    }

    #[test]
    fn the_bootstrap_upstream_has_no_live_colour() {
        assert_eq!(
            live_color("upstream wsctl_live {\n    server 127.0.0.1:8000 down;\n}\n"),
            None
        );
    }
}
