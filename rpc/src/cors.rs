//! CORS for the public JSON-RPC port, as anvil and geth's `--http.corsdomain '*'` do: browser
//! dApps on another origin (a Vite dev server, MetaMask-connected pages) can call the node.
//! Preflight `OPTIONS` requests are answered here; every response carries the allow headers.

use jsonrpsee::server::{HttpBody, HttpResponse};
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

/// The tower layer adding CORS headers.
#[derive(Clone, Debug, Default)]
pub struct CorsLayer;

impl<S> tower::Layer<S> for CorsLayer {
    type Service = CorsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CorsService { inner }
    }
}

/// The service [`CorsLayer`] wraps around the JSON-RPC server.
#[derive(Clone, Debug)]
pub struct CorsService<S> {
    inner: S,
}

fn allow(response: &mut HttpResponse) {
    let headers = response.headers_mut();
    headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, http::HeaderValue::from_static("*"));
    headers.insert(http::header::ACCESS_CONTROL_ALLOW_METHODS, http::HeaderValue::from_static("POST, GET, OPTIONS"));
    headers.insert(http::header::ACCESS_CONTROL_ALLOW_HEADERS, http::HeaderValue::from_static("*"));
    headers.insert(http::header::ACCESS_CONTROL_MAX_AGE, http::HeaderValue::from_static("86400"));
}

impl<S, B> tower::Service<http::Request<B>> for CorsService<S>
where
    S: tower::Service<http::Request<B>, Response = HttpResponse>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.method() == http::Method::OPTIONS {
            let mut response = HttpResponse::new(HttpBody::from(""));
            *response.status_mut() = http::StatusCode::NO_CONTENT;
            allow(&mut response);
            return Box::pin(async move { Ok(response) });
        }
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            allow(&mut response);
            Ok(response)
        })
    }
}
