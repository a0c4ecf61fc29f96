//! A real S3-compatible server for the tests: `s3s-fs` over a temporary directory, inside the
//! test process, on a free port of 127.0.0.1, checking every request's signature (one access
//! key and its secret) and doing multipart uploads. Stopped, and its files removed, on drop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dbroker::backups::{S3Spec, Target, TargetSpec};
use dbroker::secrets::Secret;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// A running S3 server with one bucket.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// Where the server keeps its buckets (one directory each) and its uploads in progress.
    root: tempfile::TempDir,
    part_uploads: Arc<AtomicUsize>,
    /// Dropped with the server: ends its accept loop (and with it, its connections).
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl S3Server {
    /// Starts a server with an empty bucket `backups`, a random access key and secret.
    pub async fn start() -> S3Server {
        let root = tempfile::tempdir().expect("a directory for the S3 server");
        let bucket = "backups".to_string();
        std::fs::create_dir(root.path().join(&bucket)).expect("the bucket's directory");
        let access_key = format!("AK{}", hex_of(8));
        let secret_key = hex_of(20);
        let fs = s3s_fs::FileSystem::new(root.path()).expect("an s3s-fs file system");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(access_key.clone(), secret_key.clone()));
        let service = builder.build();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let part_uploads = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let counter = part_uploads.clone();
        tokio::spawn(async move {
            loop {
                let socket = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(_) => continue,
                    },
                    _ = &mut stopped => return,
                };
                let service = service.clone();
                let counter = counter.clone();
                // Counts UploadPart requests (PUT ?partNumber=N&uploadId=...), so that a test can
                // tell a multipart upload from a single PUT.
                let counting = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let is_part = request.method() == hyper::Method::PUT
                        && request.uri().query().is_some_and(|q| q.contains("partNumber="));
                    if is_part {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    hyper::service::Service::call(&service, request)
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(socket), counting).await;
                });
            }
        });
        S3Server { endpoint, bucket, access_key, secret_key, root, part_uploads, _stop: stop }
    }

    /// A target on this server's bucket, under `prefix`, with its credentials.
    pub fn target(&self, name: &str, prefix: &str) -> Target {
        self.target_with(name, prefix, &self.access_key, &self.secret_key)
    }

    /// A target with the credentials given: wrong ones, for the tests of refusal.
    pub fn target_with(&self, name: &str, prefix: &str, access_key: &str, secret_key: &str) -> Target {
        Target::from_spec(name, &TargetSpec::S3(self.spec(prefix, access_key, secret_key))).expect("an S3 target")
    }

    pub fn spec(&self, prefix: &str, access_key: &str, secret_key: &str) -> S3Spec {
        S3Spec {
            endpoint: self.endpoint.clone(),
            region: "us-east-1".into(),
            bucket: self.bucket.clone(),
            prefix: prefix.into(),
            path_style: true,
            access_key_id: Secret::new(access_key.into()),
            secret_access_key: Secret::new(secret_key.into()),
        }
    }

    /// UploadPart requests received so far.
    pub fn part_uploads(&self) -> usize {
        self.part_uploads.load(Ordering::SeqCst)
    }

    /// Multipart uploads begun and neither completed nor aborted: s3s-fs keeps one
    /// `.upload-ID.json` each in its root, and each part as `.upload_id-ID.part-N`.
    pub fn uploads_in_progress(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                let name = path.file_name().unwrap().to_string_lossy();
                name.starts_with(".upload-") || name.starts_with(".upload_id-")
            })
            .collect()
    }

    /// The file that holds object `key` of the bucket (s3s-fs keeps one file per object).
    pub fn object_file(&self, key: &str) -> PathBuf {
        self.root.path().join(&self.bucket).join(key)
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

fn hex_of(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}
