//! Listeners: TCP, optionally TLS (rustls, aws-lc-rs provider), HTTP/1.1 and HTTP/2.

use crate::config::{ClientAuth, ListenerConfig};
use axum::extract::ConnectInfo;
use axum::Extension;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The verified client certificate chain of a TLS connection, for certificate login.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Vec<CertificateDer<'static>>);

/// Listener start-up errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// A TLS file is unreadable or invalid.
    #[error("{setting}: {reason}")]
    Tls {
        /// The setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn tls_err(setting: &'static str, reason: impl ToString) -> ListenError {
    ListenError::Tls {
        setting,
        reason: reason.to_string(),
    }
}

fn load_certs(
    setting: &'static str,
    p: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, ListenError> {
    let data = std::fs::read(p).map_err(|e| tls_err(setting, e))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(setting, e))?;
    if certs.is_empty() {
        return Err(tls_err(setting, "no PEM certificates found"));
    }
    Ok(certs)
}

/// `tls_client_auth = "request"` without a client CA: asks for a certificate, accepts any
/// well-formed one with a valid handshake signature (proof of key possession), and leaves
/// the chain, validity, names and revocation to the `cert` login method, which knows which
/// CAs each role trusts. This is what Vault's listener does for its cert method. Requests
/// that present no certificate proceed unauthenticated, as with any other client.
#[derive(Debug)]
struct AnyClientCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::server::danger::ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        use x509_parser::prelude::FromDer as _;
        x509_parser::certificate::X509Certificate::from_der(end_entity.as_ref()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Builds the rustls server config for a listener (None when TLS is disabled).
pub fn tls_config(l: &ListenerConfig) -> Result<Option<Arc<rustls::ServerConfig>>, ListenError> {
    if l.tls_disable {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&l.tls_cert_file, &l.tls_key_file) else {
        return Err(tls_err(
            "listener.tls_cert_file",
            "TLS needs tls_cert_file and tls_key_file",
        ));
    };
    let chain = load_certs("listener.tls_cert_file", cert)?;
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read(key).map_err(|e| tls_err("listener.tls_key_file", e))?,
    );
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| tls_err("listener.tls_key_file", e))?
        .ok_or_else(|| tls_err("listener.tls_key_file", "no PEM private key found"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("listener", e))?;
    let builder = match l.tls_client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Request if l.tls_client_ca_file.is_none() => {
            builder.with_client_cert_verifier(Arc::new(AnyClientCert(provider.clone())))
        }
        mode => {
            let ca = l.tls_client_ca_file.as_ref().ok_or_else(|| {
                tls_err("listener.tls_client_ca_file", "required for client auth")
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs("listener.tls_client_ca_file", ca)? {
                roots
                    .add(c)
                    .map_err(|e| tls_err("listener.tls_client_ca_file", e))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if mode == ClientAuth::Request {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| tls_err("listener.tls_client_ca_file", e))?,
            )
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("listener.tls_key_file", e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(cfg)))
}

/// Binds `addr`. Separate from [`serve`] so that errors surface before the server starts.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { addr, source })
}

/// How long a shutdown waits for in-flight requests before it closes what is left.
pub const DRAIN: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
) {
    serve_until(listener, tls, app, std::future::pending()).await
}

/// Serves `app` on `listener` until `stop` completes; then stops accepting, lets every open
/// connection finish its in-flight requests (HTTP/1.1 closes after the current response,
/// HTTP/2 sends GOAWAY), and returns when they are done or after [`DRAIN`].
pub async fn serve_until(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            builder.http2().max_concurrent_streams(256);
            let app = app.layer(Extension(ConnectInfo(addr)));
            match acceptor {
                Some(acc) => {
                    let tls =
                        match tokio::time::timeout(Duration::from_secs(10), acc.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                        .unwrap_or_default();
                    let svc =
                        TowerToHyperService::new(app.layer(Extension(PeerCertificates(peer))));
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    let _ = watcher.watch(conn).await;
                }
                None => {
                    let svc = TowerToHyperService::new(app);
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn).await;
                }
            }
        });
    }
    drop(listener);
    tracing::info!("listener closed; finishing in-flight requests");
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            seconds = DRAIN.as_secs(),
            "in-flight requests did not finish in time; closing them"
        );
    }
}
