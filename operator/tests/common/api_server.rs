//! A scripted Kubernetes API server for reconcile tests, in kube-rs's tower-test style: the
#![allow(dead_code)]
//! test expects requests in order and asserts each one's method, path, query and body; a
//! missing request times out, an extra one finds the mock closed.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

pub fn client() -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer { handle })
}

pub struct ApiServer {
    handle: Handle,
}

/// One request as the test sees it.
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
}

impl Seen {
    /// Reads `request`, and asserts the operator's RBAC list permits it.
    async fn of(request: Request<Body>) -> Seen {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let seen = Seen {
            method,
            path,
            query,
            body,
        };
        assert_permitted(&seen);
        seen
    }

    pub fn is_watch(&self) -> bool {
        self.query.get("watch").is_some_and(|watch| watch == "true")
    }
}

impl ApiServer {
    /// The next request, checked against the operator's RBAC list, answered by `respond`.
    pub async fn next(&mut self, respond: impl FnOnce(&Seen) -> (u16, Value)) -> Seen {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(5), self.handle.next_request())
                .await
                .expect("the operator sent no further request")
                .expect("the mock service is gone");
        let seen = Seen::of(request).await;
        let (code, response) = respond(&seen);
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&response).unwrap()))
                .unwrap(),
        );
        seen
    }

    /// Serves a starting controller for `period`: every list is answered with an empty
    /// list, every watch is held open (nothing happens). Returns the requests seen.
    pub async fn serve_watches(&mut self, period: Duration) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + period;
        let mut open = Vec::new();
        let mut requests = Vec::new();
        while let Ok(Some((request, send))) =
            tokio::time::timeout_at(deadline, self.handle.next_request()).await
        {
            let seen = Seen::of(request).await;
            assert_eq!(seen.method, Method::GET, "{} {}", seen.method, seen.path);
            if seen.is_watch() {
                open.push(send);
            } else {
                let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []});
                send.send_response(
                    Response::builder()
                        .status(200)
                        .body(Body::from(serde_json::to_vec(&list).unwrap()))
                        .unwrap(),
                );
            }
            requests.push(seen);
        }
        requests
    }

    /// Expects `method` on `path`, answering `respond`.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        respond: impl FnOnce(&Seen) -> (u16, Value),
    ) -> Seen {
        self.next(|seen| {
            assert_eq!(
                (&seen.method, seen.path.as_str()),
                (&method, path),
                "unexpected request"
            );
            respond(seen)
        })
        .await
    }

    /// Expects a server-side apply of `path` under the operator's field manager, forced,
    /// answering with the applied object plus `status`.
    pub async fn expect_apply(&mut self, path: &str, status: Option<Value>) -> Seen {
        self.expect(Method::PATCH, path, |seen| {
            assert_eq!(
                seen.query.get("fieldManager").map(String::as_str),
                Some("paysys-operator")
            );
            assert_eq!(seen.query.get("force").map(String::as_str), Some("true"));
            assert!(
                seen.body["apiVersion"].is_string() && seen.body["kind"].is_string(),
                "{path}: apply needs apiVersion and kind"
            );
            let name = path.rsplit('/').next().unwrap();
            if !path.ends_with("/status") {
                assert_eq!(seen.body["metadata"]["name"], name);
            }
            let mut object = seen.body.clone();
            if let Some(status) = status {
                object["status"] = status;
            }
            object["metadata"]["generation"] = json!(1);
            (200, object)
        })
        .await
    }

    /// Expects a server-side apply of a `PaymentSystem`'s status, answering with the whole
    /// resource as the API server would.
    pub async fn expect_apply_status(&mut self, path: &str) -> Seen {
        self.expect(Method::PATCH, path, |seen| {
            assert_eq!(
                seen.query.get("fieldManager").map(String::as_str),
                Some("paysys-operator")
            );
            assert_eq!(seen.query.get("force").map(String::as_str), Some("true"));
            assert_eq!(seen.body["apiVersion"], "paysys.io/v1alpha1");
            assert_eq!(seen.body["kind"], "PaymentSystem");
            assert!(
                seen.body.get("spec").is_none(),
                "a status apply carries no spec"
            );
            let object = json!({
                "apiVersion": "paysys.io/v1alpha1",
                "kind": "PaymentSystem",
                "metadata": {"name": "shop", "namespace": "payments", "generation": 1},
                "spec": {},
                "status": seen.body["status"].clone(),
            });
            (200, object)
        })
        .await
    }

    /// Expects a delete of `path`; `exists` chooses between success and 404.
    pub async fn expect_delete(&mut self, path: &str, exists: bool) -> Seen {
        self.expect(Method::DELETE, path, |_| {
            if exists {
                (200, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
            } else {
                not_found()
            }
        })
        .await
    }

    /// Asserts the operator sends nothing more.
    pub async fn expect_silence(&mut self) {
        let next =
            tokio::time::timeout(Duration::from_millis(300), self.handle.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

pub fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

pub fn server_error() -> (u16, Value) {
    (
        500,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd is sad"}),
    )
}

/// Maps a request to the RBAC (group, resource, verb) it needs and asserts the operator's
/// published permissions grant it.
fn assert_permitted(seen: &Seen) {
    let parts: Vec<&str> = seen.path.trim_start_matches('/').split('/').collect();
    // API discovery (`/apis/<group>/<version>`) is open to every authenticated client
    // (ClusterRole system:discovery): no rule of the operator's needed.
    if let ["apis", _group, _version] = parts.as_slice()
        && seen.method == Method::GET
    {
        return;
    }
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("unexpected path {}", seen.path),
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => panic!("unexpected path {}", seen.path),
    };
    let verb = match (&seen.method, named) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if seen.is_watch() => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PATCH, _) => "patch",
        (&Method::PUT, _) => "update",
        (&Method::DELETE, _) => "delete",
        (method, _) => panic!("unexpected method {method}"),
    };
    assert!(
        paysys_operator::rbac::allows(group, &resource, verb),
        "rbac.rs does not grant {verb} on {group}/{resource} ({} {})",
        seen.method,
        seen.path
    );
}
