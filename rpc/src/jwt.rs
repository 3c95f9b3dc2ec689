//! JWT authentication of the Engine API (HS256, `iat` within ±60 s): an HTTP middleware that
//! answers 401 to any request without a valid `Authorization: Bearer <token>`.

use alloy_rpc_types_engine::JwtSecret;
use jsonrpsee::server::{HttpBody, HttpResponse};
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

/// The tower layer that checks the token.
#[derive(Clone, Debug)]
pub struct JwtLayer {
    secret: JwtSecret,
}

impl JwtLayer {
    /// Checks tokens against `secret`.
    pub fn new(secret: JwtSecret) -> Self {
        Self { secret }
    }
}

impl<S> tower::Layer<S> for JwtLayer {
    type Service = JwtService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        JwtService { inner, secret: self.secret }
    }
}

/// The service [`JwtLayer`] wraps around the JSON-RPC server.
#[derive(Clone, Debug)]
pub struct JwtService<S> {
    inner: S,
    secret: JwtSecret,
}

/// Why a request is refused, or `None` when its token is valid.
pub fn check_authorization<B>(request: &http::Request<B>, secret: &JwtSecret) -> Option<String> {
    let Some(value) = request.headers().get(http::header::AUTHORIZATION) else { return Some("missing authorization header".into()) };
    let Ok(text) = value.to_str() else { return Some("invalid authorization header".into()) };
    let Some(token) = text.strip_prefix("Bearer ") else { return Some("authorization is not a bearer token".into()) };
    secret.validate(token.trim()).err().map(|e| e.to_string())
}

impl<S, B> tower::Service<http::Request<B>> for JwtService<S>
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
        match check_authorization(&request, &self.secret) {
            None => Box::pin(self.inner.call(request)),
            Some(reason) => {
                let mut response = HttpResponse::new(HttpBody::from(reason));
                *response.status_mut() = http::StatusCode::UNAUTHORIZED;
                Box::pin(async move { Ok(response) })
            }
        }
    }
}
