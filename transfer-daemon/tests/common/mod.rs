//! Shared by the binary's integration tests: an aws-sdk-s3 client for a running daemon.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use tests::Daemon;

/// A path-style client of `daemon`'s S3 listener with the access key `id`/`secret`.
pub fn s3_client(daemon: &Daemon, id: &str, secret: &str) -> Client {
    let creds = aws_credential_types::Credentials::new(id, secret, None, None, "clusster-test");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(daemon.s3_url())
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    Client::from_conf(config)
}
