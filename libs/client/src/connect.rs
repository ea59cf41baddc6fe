//! A channel to a Verimail service, presenting the service credential on every call.

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use verimail_proto::auth::v1::auth_service_client::AuthServiceClient;
use verimail_proto::user::v1::user_service_client::UserServiceClient;

/// The metadata key Verimail reads a service credential from.
const SERVICE_TOKEN: &str = "x-verimail-service-token";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}: not a URL a channel can connect to")]
    Url(String),
    #[error("TLS settings: {0}")]
    Tls(String),
    #[error("the service token must be printable ASCII")]
    Token,
}

/// Presents the service credential (`x-verimail-service-token`) on every call; none when
/// empty. The value is marked sensitive: its `Debug` (and tonic's) shows `Sensitive`.
#[derive(Clone, Debug, Default)]
pub struct ServiceToken(Option<AsciiMetadataValue>);

impl Interceptor for ServiceToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert(SERVICE_TOKEN, token.clone());
        }
        Ok(request)
    }
}

/// A channel that presents the credential.
pub type WithCredential = tonic::service::interceptor::InterceptedService<Channel, ServiceToken>;

/// Where a Verimail service is and how to reach it: its URL (`http://` or, with TLS,
/// `https://`), the CA that signed its certificate and this service's own (mutual TLS, as
/// Verimail's services run with `GRPC_TLS_*`), and the service credential (`APP_SERVICE_TOKEN`
/// for lookups). The channel connects lazily and reconnects by itself.
#[derive(Clone)]
pub struct Connection {
    endpoint: Endpoint,
    token: ServiceToken,
}

impl Connection {
    pub fn new(url: &str) -> Result<Connection, ConnectError> {
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|_| ConnectError::Url(url.to_owned()))?;
        Ok(Connection {
            endpoint: endpoint
                .connect_timeout(std::time::Duration::from_secs(2))
                .timeout(std::time::Duration::from_secs(10)),
            token: ServiceToken::default(),
        })
    }

    /// TLS with the CA's certificate (PEM), and this service's certificate and key (PEM) when
    /// the server asks for one.
    pub fn with_tls(mut self, ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<Connection, ConnectError> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        self.endpoint = self.endpoint.tls_config(tls).map_err(|e| ConnectError::Tls(e.to_string()))?;
        Ok(self)
    }

    /// The service credential to present.
    pub fn with_service_token(mut self, token: &str) -> Result<Connection, ConnectError> {
        let mut value: AsciiMetadataValue = MetadataValue::try_from(token.trim()).map_err(|_| ConnectError::Token)?;
        value.set_sensitive(true);
        self.token = ServiceToken(Some(value));
        Ok(self)
    }

    pub fn channel(&self) -> WithCredential {
        tonic::service::interceptor::InterceptedService::new(self.endpoint.connect_lazy(), self.token.clone())
    }

    /// user-service: GetUser and BatchGetUsers with `APP_SERVICE_TOKEN`; SignIn for anyone.
    pub fn users(&self) -> UserServiceClient<WithCredential> {
        UserServiceClient::new(self.channel())
    }

    /// auth-service: GetPublicKeys (what [`crate::TokenVerifier::from_auth`] uses).
    pub fn auth(&self) -> AuthServiceClient<WithCredential> {
        AuthServiceClient::new(self.channel())
    }
}
