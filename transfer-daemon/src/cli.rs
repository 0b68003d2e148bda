//! The command line, as clap parses it: verbs, their arguments and help texts. What each
//! verb does is in [`crate::commands`].
//!
//! The doc comments here are the `--help` text, written for a terminal: `[offload]` names a
//! config section and `<data-dir>` a placeholder, not a link or an HTML tag.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use crate::config::DEFAULT_DATA_DIR;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "clusster",
    version,
    about = "Data plane of a federated research cloud: S3 gateway, dedup transfers, catalog"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a data dir with a documented config file.
    Init {
        /// Where to create it.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the site daemon until SIGINT or SIGTERM.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Admin listener address (IP:PORT, port 0 = any free port), overriding the config.
        #[arg(long)]
        admin_listen: Option<String>,
        /// S3 listener address (IP:PORT, port 0 = any free port), overriding the config.
        #[arg(long)]
        s3_listen: Option<String>,
    },
    /// Manage S3 access keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Manage API tokens for the catalog and staging routes (schedulers, jobs).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage which projects may use a bucket.
    Bucket {
        #[command(subcommand)]
        command: BucketCommand,
    },
    /// Publish bucket prefixes as dataset versions, list, tag and show them, check them out.
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
    },
    /// Replication rules: N copies of a version, or of every version of a dataset, on
    /// the sites matching an expression; this site acts on its own.
    Rule {
        #[command(subcommand)]
        command: RuleCommand,
    },
    /// Ask the catalog: where a version's bytes already are, what changed since a cursor.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Move data between sites: push, pull, third-party copy; follow and cancel.
    Transfer {
        #[command(subcommand)]
        command: TransferCommand,
    },
    /// Run garbage collection now on the running daemon.
    Gc(AdminArgs),
    /// Verify every stored chunk now on the running daemon; exit 3 if any is corrupt.
    Scrub(AdminArgs),
    /// Recount references and look for missing chunks; exit 3 on any inconsistency.
    Check(AdminArgs),
    /// Fetch every quarantined (corrupt) chunk again from the federation's other sites;
    /// exit 3 if some could not be repaired.
    Repair(AdminArgs),
    /// Create a federation: its CA and federation file.
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
    /// Create a site's identity in a federation.
    Site {
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// Run the offload agent: hashing and compression for a daemon on this machine, on
    /// other cores (or a DPU's), through shared memory. Runs until killed.
    OffloadAgent {
        /// Socket to listen on (default: [offload] agent_socket of the config).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Cores to pin to, e.g. 1 or 2,3 (default: [offload] agent_cores).
        #[arg(long, value_delimiter = ',')]
        cores: Option<Vec<usize>>,
        /// How long to keep polling for work after finishing some before sleeping, in
        /// microseconds, at most 1 s (0: sleep at once; each sleep costs the host a
        /// doorbell).
        #[arg(
            long,
            default_value_t = hw_offload::agent::DEFAULT_IDLE_SPIN.as_micros() as u64,
            value_parser = clap::value_parser!(u64).range(0..=1_000_000)
        )]
        idle_spin_us: u64,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Offload engine tools.
    Offload {
        #[command(subcommand)]
        command: OffloadCommand,
    },
    /// Copy a dataset version into a local directory for a job (on a compute node).
    ///
    /// Asks the site daemon to pin NS/NAME@TAG (or @VERSION-ID; the version published last
    /// without either) for the job and to make its copy complete, fetching what it lacks
    /// from another site (asked again every 30 s until --timeout); then writes each file
    /// under DEST/<path>, checking every chunk's BLAKE3 against the manifest as the bytes
    /// arrive. Each file is written as DEST/<dir>/.<name>.clusster-part, synced, given the
    /// version's mtime and renamed: running it again resumes, a file already there with the
    /// manifest's size and mtime is kept, a part file is kept up to its first bad chunk.
    ///
    /// Endpoint: --endpoint, else $CLUSSTER_ENDPOINT, else `endpoint` in the client config
    /// file. Token (a `stage`-scoped one, from `clusster token create --scope stage`):
    /// $CLUSSTER_TOKEN, else `token` (or `token_file`) in the client config file. The
    /// client config file is $CLUSSTER_CLIENT_CONFIG, else ~/.config/clusster/client.toml,
    /// TOML: endpoint = "http://host:port", token = "…" or token_file = "path".
    /// Job: --job, else $SLURM_JOB_ID, else $FLUX_JOB_ID.
    #[command(after_help = STAGE_EXIT_CODES)]
    StageIn(StageInArgs),
    /// Publish a local directory as a new version of a dataset (at the end of a job).
    ///
    /// Walks SRC (sorted; a symlink is followed and stored as what it points to, and is
    /// refused if it points outside SRC; names must be UTF-8 without a newline; directories
    /// are not stored, so an empty directory is lost), cuts every file into chunks the way
    /// the site does, asks the site which chunks it lacks and sends only those, then
    /// publishes the files (with their mtimes) as a version of NS/NAME, moving --tag to it,
    /// adding --rule for it and ending the job's pins. Prints the version id on stdout (a
    /// summary on stderr; with --json, the site's answer with the chunks and bytes sent).
    ///
    /// Endpoint, token and job are found as for stage-in (the job is optional here: without
    /// one, no pin ends).
    #[command(after_help = STAGE_EXIT_CODES)]
    StageOut(StageOutArgs),
}

/// The exit codes of `stage-in` and `stage-out`, under their help.
const STAGE_EXIT_CODES: &str = "Exit codes: 0 success; 1 other failure (the message says why, e.g. a token \
without the stage scope); 2 bad usage (arguments, DEST not writable, refused names or symlinks); 4 dataset, \
tag or version not found; 5 no space (here, or at the site); 6 transfer failed (the site could not fetch the \
data, or the connection failed); 7 verification failed (a chunk's BLAKE3 does not match); 8 timed out.";

/// Where the site daemon is (see the verb's help for the token).
#[derive(clap::Args)]
pub struct EndpointArgs {
    /// The site daemon's admin URL, as http://host:port or https://host:port (else
    /// $CLUSSTER_ENDPOINT, else the client config file's `endpoint`).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// For an https endpoint: the CA certificates (PEM) its certificate is checked against
    /// (else $CLUSSTER_CA_FILE, else the client config file's `ca_file`, else the system's
    /// /etc/ssl/certs/ca-certificates.crt).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// The job's id (else $SLURM_JOB_ID, else $FLUX_JOB_ID).
    #[arg(long)]
    pub job: Option<String>,
    /// Files read at once (stage-in, default 16: each file's fsync overlaps the others'
    /// reads), or hashing threads and chunk bodies sent at once (stage-out, default 8; at
    /// most one thread per core and 8 bodies of 16 MiB).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: Option<u16>,
    /// Print the result as JSON, and no progress.
    #[arg(long)]
    pub json: bool,
}

/// `clusster stage-in`.
#[derive(clap::Args)]
pub struct StageInArgs {
    /// NS/NAME@TAG, NS/NAME@VERSION-ID, or NS/NAME (the version published last).
    pub version: String,
    /// The directory to write the files into (created if missing).
    pub dest: PathBuf,
    /// How long to wait for the site to have the whole version (90s, 30m, 12h, 7d).
    #[arg(long, default_value = "1h")]
    pub timeout: String,
    /// How long the site keeps the version for the job (90s, 30m, 12h, 7d).
    #[arg(long, default_value = "24h")]
    pub pin_for: String,
    #[command(flatten)]
    pub common: EndpointArgs,
}

/// `clusster stage-out`.
#[derive(clap::Args)]
pub struct StageOutArgs {
    /// The directory whose files become the version.
    pub src: PathBuf,
    /// NS/NAME: the dataset (its namespace is this site's, e.g. paris.results).
    pub dataset: String,
    /// Move this tag to the version.
    #[arg(long)]
    pub tag: Option<String>,
    /// A replication rule for the version: "N copies on SITES", e.g. "2 copies on tier=hpc".
    #[arg(long)]
    pub rule: Option<String>,
    #[command(flatten)]
    pub common: EndpointArgs,
}

#[derive(Subcommand)]
pub enum OffloadCommand {
    /// Measure host CPU per job on the CPU and through a running agent, per operation
    /// and size, and write the thresholds the router uses.
    Bench {
        /// Agent socket (default: [offload] agent_socket of the config).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Where to write the thresholds (default: [offload] thresholds_file).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the measurements as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum FederationCommand {
    /// Write a CA key (ca.key, 0600), its certificate (ca.pem) and a documented federation.toml into DIR.
    Init {
        /// Directory to write into (created if missing). Keep ca.key there, offline if you can.
        #[arg(long)]
        dir: PathBuf,
        /// The federation's name: letters, digits, '.', '_' or '-'.
        #[arg(long)]
        name: String,
        /// Replace an existing CA key and federation file (every site must then be re-issued).
        #[arg(long)]
        force: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum SiteCommand {
    /// Make a site key and a certificate signed by the federation CA, and list the site in the federation file.
    ///
    /// Writes site.key, signing.key (both 0600), site.pem and a copy of ca.pem into --out. Runs where
    /// the CA key is (next to the federation file); if that file is read-only, prints the entry to add.
    Init {
        /// The site's name: lowercase letters, digits and '-', starting with a letter.
        name: String,
        /// The federation's directory (with federation.toml and ca.key) or its federation file.
        #[arg(long)]
        federation: PathBuf,
        /// Directory for the site's files: copy it to the site as its [federation] tls_dir.
        #[arg(long)]
        out: PathBuf,
        /// Where the site's QUIC listener is reached, host:port (a new entry defaults to 127.0.0.1:7444).
        #[arg(long)]
        quic: Option<String>,
        /// The site's S3 URL (a new entry defaults to http://127.0.0.1:9000).
        #[arg(long)]
        s3: Option<String>,
        /// An attribute for placement rules, KEY=VALUE; repeat for more (e.g. --attr country=fr --attr tier=hpc).
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// Replace existing site.key and signing.key (the old keys are lost).
        #[arg(long)]
        force: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create a key for a project; prints the id and the secret (shown only once).
    Create {
        /// The project the key acts for: it reaches the project's buckets and those granted to it.
        #[arg(long)]
        project: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List keys (without secrets).
    List(AdminArgs),
    /// Delete a key.
    Delete {
        /// The access key id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum BucketCommand {
    /// Let a project use a bucket it does not own.
    Allow {
        /// The bucket.
        bucket: String,
        /// The project to let in.
        #[arg(long)]
        project: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Withdraw a project's access to a bucket it does not own.
    Revoke {
        /// The bucket.
        bucket: String,
        /// The project to shut out.
        #[arg(long)]
        project: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Let another site of the federation read the bucket (pull, copy elsewhere, repair
    /// from it), write into it (push), or both. A bucket is shared with no site until
    /// this is run; running it again replaces the site's rights.
    Share {
        /// The bucket.
        bucket: String,
        /// The federation site to share it with.
        #[arg(long)]
        site: String,
        /// The site may read the bucket.
        #[arg(long)]
        read: bool,
        /// The site may write into the bucket.
        #[arg(long)]
        write: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop sharing the bucket with a site: its transfers are refused from now on, and a
    /// push of it running is refused at its next commit.
    Unshare {
        /// The bucket.
        bucket: String,
        /// The site.
        #[arg(long)]
        site: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the sites the bucket is shared with.
    Shares {
        /// The bucket.
        bucket: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum DatasetCommand {
    /// Publish the objects under BUCKET[/PREFIX] as a new version of NS/NAME. The version
    /// is immutable: later writes to the prefix change nothing in it. A namespace is named
    /// after its home site (`paris.climate`) and is created, owned by the bucket's
    /// project, on its first publication.
    Publish {
        /// BUCKET or BUCKET/PREFIX/
        source: String,
        /// NS/NAME
        dataset: String,
        /// Move this tag to the version.
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the datasets the catalog knows, all or those of namespaces starting with NS.
    List {
        /// A namespace prefix.
        #[arg(default_value = "")]
        ns: String,
        /// Only datasets whose name starts with this.
        #[arg(long, default_value = "")]
        name: String,
        /// Only datasets with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only datasets whose metadata has KEY=VALUE (or KEY, with any value).
        #[arg(long)]
        meta: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Say what NS/NAME is, as KEY=VALUE pairs that replace its metadata (at the
    /// namespace's home); `dataset list --meta KEY=VALUE` finds it by them.
    Describe {
        /// NS/NAME
        dataset: String,
        /// KEY=VALUE, as many as wanted (none, with --clear, removes them all).
        #[arg(required_unless_present = "clear")]
        pairs: Vec<String>,
        /// Remove every entry.
        #[arg(long, conflicts_with = "pairs")]
        clear: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Move TAG of NS/NAME to the version @TAG-OR-ID names (at the namespace's home).
    Tag {
        /// NS/NAME@TAG or NS/NAME@VERSION-ID: the version the tag is to name
        version: String,
        /// The tag to move there.
        tag: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show a dataset's versions, tags and replicas.
    Show {
        /// NS/NAME
        dataset: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the files of NS/NAME@TAG (or @VERSION-ID) objects under BUCKET[/PREFIX] again,
    /// sharing the version's chunks (no data is copied).
    Checkout {
        /// NS/NAME@TAG or NS/NAME@VERSION-ID
        version: String,
        /// BUCKET or BUCKET/PREFIX/
        dest: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Drop this site's copy of NS/NAME@TAG. Refused while a job's pin or a rule keeps
    /// it, or when it is the last complete copy anywhere.
    Evict {
        /// NS/NAME@TAG or NS/NAME@VERSION-ID
        version: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Keep this site's copy of NS/NAME@TAG for a job, for a while (pinning again with
    /// the same job moves the end). Prints the pin's id.
    Pin {
        /// NS/NAME@TAG or NS/NAME@VERSION-ID
        version: String,
        /// The job's id.
        #[arg(long)]
        job: String,
        /// How long: seconds, or with a unit (90s, 30m, 12h, 7d).
        #[arg(long = "for")]
        duration: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a pin of this site's, by the id `dataset pin` printed.
    Unpin {
        /// The pin's id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Let the sites matching an expression hold copies of the versions of NS, a
    /// namespace of this site (replaces what it was shared with). Until then, only its
    /// home holds them. Examples: 'country=fr & tier=hpc', 'site in (paris, julich)', '*'.
    Share {
        /// The namespace.
        ns: String,
        /// The expression naming the sites.
        #[arg(long)]
        sites: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Rule verbs.
#[derive(clap::Subcommand)]
pub enum RuleCommand {
    /// Add (or replace) a rule of this site's: COPIES complete copies of --version, or of
    /// every version of --dataset, on the sites matching --sites.
    Add {
        /// The rule's id at this site.
        id: String,
        /// One version: NS/NAME@TAG.
        #[arg(long, conflicts_with = "dataset", required_unless_present = "dataset")]
        version: Option<String>,
        /// Every version of a dataset, as they are published: NS/NAME.
        #[arg(long)]
        dataset: Option<String>,
        /// Complete copies wanted.
        #[arg(long)]
        copies: u32,
        /// Which sites: 'country=fr & tier=hpc', 'site in (paris, julich)', '*'.
        #[arg(long)]
        sites: String,
        /// How long it holds: seconds, or with a unit (30m, 12h, 7d); forever if absent.
        #[arg(long = "for")]
        duration: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Every rule known here, with where it stands (ok, replicating, stuck and why).
    List(AdminArgs),
    /// One rule: ID (this site's) or SITE/ID.
    Show {
        /// ID or SITE/ID.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a rule of this site's; the copies it made stay.
    Delete {
        /// The rule's id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token for a project, limited to scopes; it is shown once (only its hash is
    /// kept). Give it to a scheduler (catalog:read) or a job (stage), not the admin token.
    Create {
        /// The project it acts for: it reaches that project's buckets only.
        #[arg(long)]
        project: String,
        /// catalog:read, catalog:write or stage; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the tokens (ids, projects, scopes; never the tokens).
    List(AdminArgs),
    /// Delete a token by its id: it stops working at once.
    Delete {
        /// The token's id, as `token list` shows it.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum CatalogCommand {
    /// The catalog's events (this site's and those synced from others) since a cursor;
    /// prints the cursor to ask with next.
    Feed {
        /// Where the last page ended (empty: from the start).
        #[arg(long, default_value = "")]
        cursor: String,
        /// Most events.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// For NS/NAME@TAG and candidate sites: the bytes each holds already (any data it
    /// holds counts), the bytes missing, the best source of the rest, and the estimated
    /// staging time.
    Placement {
        /// NS/NAME@TAG or NS/NAME@VERSION-ID
        version: String,
        /// Candidate sites, comma-separated.
        #[arg(long)]
        sites: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(clap::Args)]
pub struct AdminArgs {
    /// Admin address of the daemon (default: read from <data-dir>/listen.json).
    #[arg(long)]
    pub admin: Option<String>,
    /// The daemon's data dir, to find its admin address.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which config a verb that reads it uses (`serve`, `offload-agent`, `offload bench`).
#[derive(clap::Args)]
pub struct ConfigArgs {
    /// Config file (default: <data-dir>/clusster.toml if present, else built-in defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data dir, overriding the config.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Transfer verbs.
#[derive(clap::Subcommand)]
pub enum TransferCommand {
    /// Send BUCKET[/PREFIX] of this site to SITE.
    Push {
        /// The receiving site.
        site: String,
        /// What to send: BUCKET or BUCKET/PREFIX on this site, or a dataset version NS/NAME@TAG.
        source: String,
        /// Where it lands on SITE (default: the same bucket and prefix).
        dest: Option<String>,
        #[command(flatten)]
        opts: TransferOpts,
    },
    /// Fetch BUCKET[/PREFIX] of SITE into this site.
    Pull {
        /// The sending site.
        site: String,
        /// What to fetch: BUCKET or BUCKET/PREFIX on SITE, or a dataset version NS/NAME@TAG.
        source: String,
        /// Where it lands here (default: the same bucket and prefix).
        dest: Option<String>,
        #[command(flatten)]
        opts: TransferOpts,
    },
    /// Have site FROM send BUCKET[/PREFIX] to site TO (third-party transfer).
    Copy {
        /// The sending site.
        from: String,
        /// The receiving site.
        to: String,
        /// What to send: BUCKET or BUCKET/PREFIX on FROM, or a dataset version NS/NAME@TAG.
        source: String,
        /// Where it lands on TO (default: the same bucket and prefix).
        dest: Option<String>,
        #[command(flatten)]
        opts: TransferOpts,
    },
    /// Show one transfer, or all transfers this daemon knows of.
    Status {
        /// The transfer id (32 hex digits).
        id: Option<String>,
        /// Follow it until it ends.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Cancel a transfer; what it already moved is released on both sides.
    Cancel {
        /// The transfer id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Options shared by push, pull and copy.
#[derive(clap::Args)]
pub struct TransferOpts {
    /// Higher runs first when transfers queue (0-255).
    #[arg(long, default_value_t = 0)]
    pub priority: u8,
    /// Cap on the data rate, bytes per second (suffixes K, M, G: powers of 1000).
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Wait for the transfer to end, showing progress; exit 1 if it fails.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}
