use super::*;

fn route(method: Verb, path: &'static str, auth: Auth) -> RouteDoc {
    RouteDoc {
        method,
        path,
        auth,
        summary: "",
        request: None,
        response: (200, "#any"),
        also: &[],
        range: false,
        query: &[],
    }
}

#[test]
fn security_comes_from_the_route_table() {
    let routes = [
        route(Verb::Get, "/metrics", Auth::Scrape),
        route(Verb::Post, "/api/device/poll", Auth::Device),
        route(Verb::Get, "/static/{*path}", Auth::None),
        route(
            Verb::Get,
            "/api/bundles/{bundle_id}/download",
            Auth::AdminOrDevice,
        ),
    ];
    let doc = document(&routes);
    let names = |path: &str, method: &str| -> Vec<String> {
        doc["paths"][path][method]["security"]
            .as_array()
            .map(|l| {
                l.iter()
                    .flat_map(|s| s.as_object().unwrap().keys().cloned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(names("/metrics", "get"), ["adminToken", "metricsToken"]);
    assert_eq!(names("/api/device/poll", "post"), ["deviceToken"]);
    assert!(names("/static/{path}", "get").is_empty());
    assert_eq!(
        names("/api/bundles/{bundle_id}/download", "get"),
        ["adminToken", "deviceToken"]
    );
    for scheme in ["adminToken", "deviceToken", "metricsToken"] {
        assert!(doc["components"]["securitySchemes"][scheme].is_object());
    }
}

#[test]
fn no_schema_has_an_empty_required_list_and_every_reference_resolves() {
    let doc = document(&[]);
    let text = doc.to_string();
    assert!(!text.contains("\"required\":[]"), "{text}");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert_eq!(schemas["ErrorBody"]["required"], json!(["error"]));
    let mut rest = text.as_str();
    let mut seen = 0;
    while let Some(i) = rest.find("#/components/schemas/") {
        rest = &rest[i + "#/components/schemas/".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(schemas.contains_key(&name), "dangling reference to {name}");
        seen += 1;
    }
    assert!(seen > 20);
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
}
