//! The Nginx upstream: rendered from `templates/upstream.conf.j2` (or the
//! stack's own template) with minijinja, and read back to learn which
//! colour is live: the file Nginx loaded is the only source of truth.

use minijinja::{Environment, context};

pub const DEFAULT_TEMPLATE: &str = include_str!("../../templates/upstream.conf.j2");
/// The first line of every rendered upstream names the live colour.
const MARKER: &str = "# wsctl live colour: ";

pub fn render(template: &str, color: &str, host: &str, port: u16) -> anyhow::Result<String> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    environment.add_template("upstream", template)?;
    let rendered = environment.get_template("upstream")?.render(context! {
        color => color,
        host => host,
        port => port,
        rendered_at => crate::time::now_rfc3339(),
    })?;
    anyhow::ensure!(
        live_color(&rendered).as_deref() == Some(color),
        "the upstream template must start with `{MARKER}{{{{ color }}}}`"
    );
    Ok(rendered)
}

/// The colour a rendered upstream sends traffic to.
pub fn live_color(upstream: &str) -> Option<String> {
    upstream
        .lines()
        .find_map(|line| line.strip_prefix(MARKER))
        .map(|color| color.trim().to_string())
        .filter(|color| !color.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_names_the_colour_and_the_server() {
        let text = render(DEFAULT_TEMPLATE, "green", "app_green", 8000).unwrap();
        assert_eq!(live_color(&text).as_deref(), Some("green"));
        assert!(text.contains("server app_green:8000;"), "{text}");
    }

    #[test]
    fn a_template_with_an_unknown_variable_or_no_marker_is_refused() {
        assert!(render("{{ nope }}", "blue", "h", 1).is_err());
        assert!(
            render(
                "upstream x { server {{ host }}:{{ port }}; }",
                "blue",
                "h",
                1
            )
            .is_err()
        );
    }

    #[test]
    fn the_bootstrap_upstream_has_no_live_colour() {
        assert_eq!(
            live_color("upstream wsctl_live {\n    server 127.0.0.1:8000 down;\n}\n"),
            None
        );
    }
}
