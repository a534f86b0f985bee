//! The server API as an app's backend calls it: one API key, JSON in and out.

use serde_json::Value;

use super::TestServer;

/// The API key test deployments of the server API accept.
pub const API_KEY: &str = "backend-key-0123456789abcdef";

/// The server API on a node.
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// The API on `server`'s first node.
    pub fn of(server: &TestServer) -> Self {
        Self::at(&server.http(""))
    }

    /// The API of the node at `origin` (`http://host:port`).
    pub fn at(origin: &str) -> Self {
        Api {
            http: reqwest::Client::new(),
            base: format!("{origin}/api/v1"),
        }
    }

    /// `method` on `path` (under `/api/v1`) with [`API_KEY`] and an optional JSON body;
    /// the status and the JSON answer (`null` when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(API_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server API answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("a JSON body")
        };
        (status, body)
    }

    /// `GET` `path`.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }
}
