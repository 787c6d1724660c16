//! `cargo xtask gen-infra`: derive the Kubernetes workloads, NetworkPolicies
//! and Istio policies from the two sources of truth — `infra/topology.toml`
//! (which workloads exist, their ports and infrastructure) and
//! `infra/east-west/<service>.toml` (who may call whom; the very files the
//! services load and the estate suites run with). The output goes to
//! `k8s/base/generated/`; `cargo xtask lint-infra` fails when it is stale.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// `infra/topology.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Topology {
    pub(crate) trust_domain: String,
    pub(crate) namespace: String,
    pub(crate) image_registry: String,
    pub(crate) infrastructure: Infrastructure,
    pub(crate) service: Vec<Service>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Infrastructure {
    pub(crate) postgres: Endpoint,
    pub(crate) openbao: Endpoint,
    pub(crate) siem: Endpoint,
    pub(crate) monitoring: Principal,
    pub(crate) ingress: Principal,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Endpoint {
    pub(crate) namespace: String,
    pub(crate) port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Principal {
    pub(crate) namespace: String,
    pub(crate) service_account: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) api_port: u16,
    pub(crate) management_port: u16,
    pub(crate) public: bool,
    pub(crate) database: bool,
    /// The database schema (with `database`): a migration Job runs
    /// `<service> migrate` as `<schema>_owner`.
    #[serde(default)]
    pub(crate) schema: Option<String>,
    pub(crate) replicas: u32,
    #[serde(default)]
    pub(crate) internet_egress: bool,
    /// With `public`: the name clients use (`auth.estate.local`); the ingress
    /// passes TLS for it through to this workload by SNI.
    #[serde(default)]
    pub(crate) public_host: Option<String>,
    /// Holds the token signing keys in OpenBao: the CronJob `<service>-keys`
    /// runs `<service> keys rotate` monthly.
    #[serde(default)]
    pub(crate) signing_keys: bool,
}

/// An east-west policy file (the subset the infrastructure needs: callers).
#[derive(Debug, Deserialize)]
struct PolicyFile {
    #[serde(default)]
    allow: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    caller: String,
}

/// The sources, loaded and cross-checked.
pub(crate) struct Sources {
    root: PathBuf,
    pub(crate) topology: Topology,
    /// callee → callers (service names), from the east-west policies.
    pub(crate) callers: BTreeMap<String, Vec<String>>,
    /// callee → its policy file text.
    pub(crate) policies: BTreeMap<String, String>,
}

impl Sources {
    pub(crate) fn load(root: &Path) -> Result<Self> {
        let path = root.join("infra/topology.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
        let topology: Topology = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let names: Vec<&str> = topology.service.iter().map(|s| s.name.as_str()).collect();
        for service in &topology.service {
            if service.database != service.schema.is_some() {
                bail!("{}: service {:?} needs `schema` exactly when `database = true`", path.display(), service.name);
            }
        }
        let mut callers = BTreeMap::new();
        let mut policies = BTreeMap::new();
        let dir = root.join("infra/east-west");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("{}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for file in files {
            let callee = file.file_stem().and_then(|s| s.to_str()).context("policy file name")?.to_owned();
            if !names.contains(&callee.as_str()) {
                bail!("{}: no service {callee:?} in infra/topology.toml", file.display());
            }
            let text = std::fs::read_to_string(&file)?;
            let policy: PolicyFile = toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
            let prefix = format!("spiffe://{}/ns/{}/sa/", topology.trust_domain, topology.namespace);
            let mut of_callee: Vec<String> = Vec::new();
            for rule in policy.allow {
                let caller = rule.caller.strip_prefix(&prefix).with_context(|| {
                    format!("{}: caller {:?} is not a workload of this estate ({prefix}…)", file.display(), rule.caller)
                })?;
                if !names.contains(&caller) {
                    bail!("{}: caller {caller:?} is not in infra/topology.toml", file.display());
                }
                if !of_callee.iter().any(|c| c == caller) {
                    of_callee.push(caller.to_owned());
                }
            }
            of_callee.sort();
            callers.insert(callee.clone(), of_callee);
            policies.insert(callee, text);
        }
        Ok(Self { root: root.to_path_buf(), topology, callers, policies })
    }

    fn service(&self, name: &str) -> Option<&Service> {
        self.topology.service.iter().find(|s| s.name == name)
    }

    /// What `callee` may be called by, east-west.
    fn callers_of(&self, callee: &str) -> &[String] {
        self.callers.get(callee).map_or(&[], Vec::as_slice)
    }

    /// What `caller` calls, east-west.
    fn callees_of(&self, caller: &str) -> Vec<&Service> {
        self.topology
            .service
            .iter()
            .filter(|callee| self.callers_of(&callee.name).iter().any(|c| c == caller))
            .collect()
    }

    fn principal(&self, namespace: &str, service_account: &str) -> String {
        format!("{}/ns/{namespace}/sa/{service_account}", self.topology.trust_domain)
    }
}

const HEADER: &str = "# Generated by `cargo xtask gen-infra` from infra/topology.toml and\n\
                      # infra/east-west/*.toml. Do not edit: edit the sources and regenerate.\n";

/// Every generated file: path (relative to the root) → contents.
pub(crate) fn render(sources: &Sources) -> Result<BTreeMap<PathBuf, String>> {
    let mut files = BTreeMap::new();
    let base = PathBuf::from("k8s/base/generated");
    files.insert(base.join("workloads.yaml"), workloads(sources)?);
    files.insert(base.join("network-policies.yaml"), network_policies(sources)?);
    files.insert(base.join("istio.yaml"), istio(sources)?);
    for (service, text) in &sources.policies {
        files.insert(base.join(format!("east-west/{service}.toml")), text.clone());
    }
    for service in &sources.topology.service {
        let name = &service.name;
        files.insert(PathBuf::from(format!("infra/compose/config/{name}.toml")), compose_config(sources, name)?);
    }
    Ok(files)
}

/// A service's compose configuration: its Kubernetes configuration with the
/// two differences compose has — no Kubernetes auth at OpenBao, so an AppRole
/// whose ids the bootstrap writes next to the other secret files; and no
/// Service mapping port 443 to a pod's 8443, so auth, whose issuer URL every
/// service calls (`https://auth.estate.local`, port 443), listens on 443
/// itself (Docker lets an unprivileged process bind it in a container). Host
/// names stay the same: compose gives the containers the cluster DNS names as
/// network aliases.
fn compose_config(sources: &Sources, name: &str) -> Result<String> {
    let path = sources.root.join(format!("k8s/base/config/{name}.toml"));
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let kubernetes = format!(
        "auth = {{ method = \"kubernetes\", role = \"{name}\", token_file = \"/var/run/secrets/openbao/token\" }}"
    );
    let app_role = "auth = { method = \"app_role\", role_id_file = \"/etc/estate/tls/role-id\", \
                    secret_id_file = \"/etc/estate/tls/secret-id\" }";
    if !text.contains(&kubernetes) {
        bail!("{}: expected the line {kubernetes:?}", path.display());
    }
    let mut text = text.replace(&kubernetes, app_role);
    let mut note = "AppRole\n# instead of Kubernetes auth";
    if name == "auth" {
        let (k8s, compose) = ("[api]\nbind = \"0.0.0.0:8443\"", "[api]\nbind = \"0.0.0.0:443\"");
        if !text.contains(k8s) {
            bail!("{}: expected {k8s:?}", path.display());
        }
        text = text.replace(k8s, compose);
        note = "AppRole\n# instead of Kubernetes auth; the API on 443, the issuer's port";
    }
    if name == "payment" {
        // A demo host has no card network: compose's `psp` simulator answers
        // for psp.example.com with a CA of its own, shared through a volume.
        let (k8s, compose) = (
            "[service.psp]\nurl = \"https://psp.example.com\"",
            "[service.psp]\nurl = \"https://psp.example.com\"\nca_file = \"/etc/estate/psp/psp-ca.pem\"",
        );
        if !text.contains(k8s) {
            bail!("{}: expected {k8s:?}", path.display());
        }
        text = text.replace(k8s, compose);
        note = "AppRole\n# instead of Kubernetes auth; the PSP simulator's CA";
    }
    Ok(format!(
        "# Generated by `cargo xtask gen-infra` from k8s/base/config/{name}.toml ({note}).\n\
         # Do not edit.\n{text}"
    ))
}

fn labels(out: &mut String, indent: &str, topology: &Topology, name: &str) -> std::fmt::Result {
    writeln!(out, "{indent}app.kubernetes.io/name: {name}")?;
    writeln!(out, "{indent}app.kubernetes.io/part-of: estate")?;
    let _ = topology;
    Ok(())
}

fn workloads(sources: &Sources) -> Result<String> {
    let t = &sources.topology;
    let mut out = String::from(HEADER);
    for s in &t.service {
        let name = &s.name;
        let ns = &t.namespace;
        // One ServiceAccount per workload: its SPIFFE identity in the mesh and its OpenBao login.
        document(&mut out, "", "v1", "ServiceAccount", name, ns)?;
        writeln!(out, "  labels:")?;
        labels(&mut out, "    ", t, name)?;
        writeln!(out, "automountServiceAccountToken: false")?;

        document(&mut out, "", "apps/v1", "Deployment", name, ns)?;
        writeln!(out, "  labels:")?;
        labels(&mut out, "    ", t, name)?;
        writeln!(out, "spec:\n  replicas: {}\n  revisionHistoryLimit: 3", s.replicas)?;
        writeln!(out, "  selector:\n    matchLabels:\n      app.kubernetes.io/name: {name}")?;
        writeln!(out, "  template:\n    metadata:\n      labels:")?;
        labels(&mut out, "        ", t, name)?;
        writeln!(out, "      annotations:\n        sidecar.istio.io/inject: \"true\"")?;
        writeln!(out, "    spec:")?;
        pod_security(&mut out, name)?;
        writeln!(out, "      topologySpreadConstraints:")?;
        writeln!(out, "        - maxSkew: 1\n          topologyKey: kubernetes.io/hostname")?;
        writeln!(out, "          whenUnsatisfiable: ScheduleAnyway")?;
        writeln!(
            out,
            "          labelSelector:\n            matchLabels:\n              app.kubernetes.io/name: {name}"
        )?;
        writeln!(out, "      containers:")?;
        writeln!(out, "        - name: {name}")?;
        writeln!(out, "          image: {}/{name}", t.image_registry)?;
        writeln!(out, "          imagePullPolicy: Always")?;
        writeln!(out, "          env:")?;
        writeln!(out, "            - name: ESTATE_CONFIG\n              value: /etc/estate/config/estate.toml")?;
        writeln!(out, "          ports:")?;
        writeln!(out, "            - name: api\n              containerPort: {}", s.api_port)?;
        writeln!(out, "            - name: management\n              containerPort: {}", s.management_port)?;
        for (probe, path) in
            [("startupProbe", "/health/live"), ("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")]
        {
            writeln!(out, "          {probe}:")?;
            writeln!(
                out,
                "            httpGet:\n              path: {path}\n              port: management\n              scheme: HTTPS"
            )?;
            writeln!(out, "            periodSeconds: 5")?;
            if probe == "startupProbe" {
                writeln!(out, "            failureThreshold: 60")?;
            }
        }
        writeln!(out, "          resources:")?;
        writeln!(out, "            requests:\n              cpu: 100m\n              memory: 128Mi")?;
        writeln!(out, "            limits:\n              cpu: \"1\"\n              memory: 256Mi")?;
        container_security(&mut out)?;
        writeln!(out, "          volumeMounts:")?;
        writeln!(
            out,
            "            - name: config\n              mountPath: /etc/estate/config\n              readOnly: true"
        )?;
        writeln!(
            out,
            "            - name: tls\n              mountPath: /etc/estate/tls\n              readOnly: true"
        )?;
        writeln!(
            out,
            "            - name: openbao-token\n              mountPath: /var/run/secrets/openbao\n              readOnly: true"
        )?;
        writeln!(out, "            - name: tmp\n              mountPath: /tmp")?;
        writeln!(out, "            - name: spool\n              mountPath: /var/lib/estate/spool")?;
        config_and_tls_volumes(&mut out, name)?;
        openbao_token_volume(&mut out)?;
        writeln!(
            out,
            "        - name: tmp\n          emptyDir:\n            medium: Memory\n            sizeLimit: 16Mi"
        )?;
        writeln!(out, "        - name: spool\n          emptyDir:\n            sizeLimit: 256Mi")?;

        document(&mut out, "", "v1", "Service", name, ns)?;
        writeln!(out, "  labels:")?;
        labels(&mut out, "    ", t, name)?;
        writeln!(out, "spec:\n  selector:\n    app.kubernetes.io/name: {name}\n  ports:")?;
        // appProtocol tcp: the application speaks its own (m)TLS; the mesh sees opaque TCP.
        writeln!(
            out,
            "    - name: tcp-api\n      port: {0}\n      targetPort: api\n      appProtocol: tcp",
            s.api_port
        )?;
        if s.public {
            // The public URL (https://<name>.estate.local) inside the cluster too.
            writeln!(out, "    - name: tcp-https\n      port: 443\n      targetPort: api\n      appProtocol: tcp")?;
        }
        writeln!(
            out,
            "    - name: tcp-management\n      port: {0}\n      targetPort: management\n      appProtocol: tcp",
            s.management_port
        )?;

        document(&mut out, "", "policy/v1", "PodDisruptionBudget", name, ns)?;
        writeln!(out, "spec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: {name}")?;
        if let Some(schema) = &s.schema {
            migration_job(&mut out, t, name, schema)?;
        }
        if s.signing_keys {
            keys_cron_job(&mut out, t, name)?;
        }
    }
    Ok(out)
}

/// `<name>-keys`: a CronJob running `<name> keys rotate` on the first of
/// each month — one run publishes a new key, the next activates it, so each
/// signing key signs for about two months (docs/runbooks/rotate-signing-key.md).
/// The first run, which initialises the keys, and any step out of schedule:
/// `kubectl create job --from=cronjob/<name>-keys <name>-keys-$(date +%s)`.
/// It runs as the service's ServiceAccount (the keys are in its part of
/// OpenBao, read with its Kubernetes auth role), without a sidecar, reaching
/// only DNS, OpenBao and the SIEM (the rotation is audited).
fn keys_cron_job(out: &mut String, t: &Topology, name: &str) -> std::fmt::Result {
    let ns = &t.namespace;
    let job = format!("{name}-keys");
    document(out, "", "batch/v1", "CronJob", &job, ns)?;
    writeln!(out, "  labels:")?;
    labels(out, "    ", t, &job)?;
    writeln!(out, "spec:\n  schedule: \"0 3 1 * *\"\n  timeZone: Etc/UTC\n  concurrencyPolicy: Forbid")?;
    writeln!(
        out,
        "  jobTemplate:\n    spec:\n      backoffLimit: 3\n      activeDeadlineSeconds: 300\n      template:"
    )?;
    writeln!(out, "        metadata:\n          labels:")?;
    labels(out, "            ", t, &job)?;
    writeln!(out, "          annotations:\n            sidecar.istio.io/inject: \"false\"")?;
    // The pod spec at the Deployment's depth, then indented four more.
    let mut pod = String::new();
    writeln!(pod, "    spec:\n      restartPolicy: OnFailure")?;
    pod_security(&mut pod, name)?;
    one_shot_container(&mut pod, t, name, "keys", r#"["keys", "rotate"]"#)?;
    for (volume, path) in
        [("config", "/etc/estate/config"), ("tls", "/etc/estate/tls"), ("openbao-token", "/var/run/secrets/openbao")]
    {
        writeln!(pod, "            - name: {volume}\n              mountPath: {path}\n              readOnly: true")?;
    }
    writeln!(pod, "            - name: spool\n              mountPath: /var/lib/estate/spool")?;
    config_and_tls_volumes(&mut pod, name)?;
    openbao_token_volume(&mut pod)?;
    writeln!(pod, "        - name: spool\n          emptyDir:\n            sizeLimit: 64Mi")?;
    for line in pod.lines() {
        writeln!(out, "    {line}")?;
    }
    Ok(())
}

/// The head of a run-to-completion container (a Job's or CronJob's): the
/// service's image and configuration, `args`, small requests and limits, the
/// restricted security context; `volumeMounts:` follows.
fn one_shot_container(out: &mut String, t: &Topology, service: &str, container: &str, args: &str) -> std::fmt::Result {
    writeln!(out, "      containers:\n        - name: {container}\n          image: {}/{service}", t.image_registry)?;
    writeln!(out, "          imagePullPolicy: Always\n          args: {args}")?;
    writeln!(
        out,
        "          env:\n            - name: ESTATE_CONFIG\n              value: /etc/estate/config/estate.toml"
    )?;
    writeln!(out, "          resources:")?;
    writeln!(out, "            requests:\n              cpu: 50m\n              memory: 64Mi")?;
    writeln!(out, "            limits:\n              cpu: 500m\n              memory: 128Mi")?;
    container_security(out)?;
    writeln!(out, "          volumeMounts:")
}

/// A short-lived ServiceAccount token for OpenBao's Kubernetes auth only
/// (audience `openbao`), as a volume.
fn openbao_token_volume(out: &mut String) -> std::fmt::Result {
    writeln!(
        out,
        "        - name: openbao-token\n          projected:\n            defaultMode: 0400\n            sources:"
    )?;
    writeln!(
        out,
        "              - serviceAccountToken:\n                  audience: openbao\n                  expirationSeconds: 600\n                  path: token"
    )
}

/// A pod's account and restricted security context (Pod Security "restricted").
fn pod_security(out: &mut String, account: &str) -> std::fmt::Result {
    writeln!(out, "      serviceAccountName: {account}")?;
    writeln!(out, "      automountServiceAccountToken: false")?;
    writeln!(out, "      enableServiceLinks: false")?;
    writeln!(out, "      securityContext:")?;
    writeln!(
        out,
        "        runAsNonRoot: true\n        runAsUser: 65532\n        runAsGroup: 65532\n        fsGroup: 65532"
    )?;
    writeln!(out, "        seccompProfile:\n          type: RuntimeDefault")
}

/// `volumes:` with the service's configuration (ConfigMap) and its secret
/// files — owner-read only, on tmpfs (secret volumes are); never env vars.
fn config_and_tls_volumes(out: &mut String, name: &str) -> std::fmt::Result {
    writeln!(out, "      volumes:")?;
    writeln!(
        out,
        "        - name: config\n          configMap:\n            name: {name}-config\n            defaultMode: 0444"
    )?;
    writeln!(
        out,
        "        - name: tls\n          secret:\n            secretName: {name}-tls\n            defaultMode: 0400"
    )
}

/// A container's security context: non-root, no escalation, read-only root, no capabilities.
fn container_security(out: &mut String) -> std::fmt::Result {
    writeln!(out, "          securityContext:")?;
    writeln!(out, "            runAsNonRoot: true\n            runAsUser: 65532")?;
    writeln!(out, "            allowPrivilegeEscalation: false\n            privileged: false")?;
    writeln!(out, "            readOnlyRootFilesystem: true")?;
    writeln!(out, "            capabilities:\n              drop:\n                - ALL")?;
    writeln!(out, "            seccompProfile:\n              type: RuntimeDefault")
}

/// `<name>-migrate`: a Job running `<name> migrate` as `<schema>_owner`
/// (docs/deploy.md, "Schema migrations"), with its own ServiceAccount (no
/// OpenBao login, no API token), the owner's password as a 0400 file from
/// `kv/<name>/db-owner` and no sidecar (a Job with one never completes).
/// Jobs are immutable: delete it before applying a new version, or let the
/// CD tool run it as a pre-sync hook.
fn migration_job(out: &mut String, t: &Topology, name: &str, schema: &str) -> std::fmt::Result {
    let ns = &t.namespace;
    let job = format!("{name}-migrate");
    document(out, "", "v1", "ServiceAccount", &job, ns)?;
    writeln!(out, "  labels:")?;
    labels(out, "    ", t, &job)?;
    writeln!(out, "automountServiceAccountToken: false")?;
    let comment =
        format!("The schema owner's password (kv/{name}/db-owner, field `password`), for the migration Job only.");
    document(out, &comment, "external-secrets.io/v1", "ExternalSecret", &format!("{name}-db-owner"), ns)?;
    writeln!(out, "spec:\n  refreshInterval: 1h\n  secretStoreRef:\n    name: openbao\n    kind: SecretStore")?;
    writeln!(out, "  target:\n    name: {name}-db-owner\n    creationPolicy: Owner\n    deletionPolicy: Retain")?;
    writeln!(out, "  dataFrom:\n    - extract:\n        key: {name}/db-owner")?;
    document(out, "", "batch/v1", "Job", &job, ns)?;
    writeln!(out, "  labels:")?;
    labels(out, "    ", t, &job)?;
    writeln!(out, "  annotations:\n    argocd.argoproj.io/hook: PreSync")?;
    writeln!(out, "spec:\n  backoffLimit: 3\n  activeDeadlineSeconds: 600\n  template:\n    metadata:\n      labels:")?;
    labels(out, "        ", t, &job)?;
    writeln!(out, "      annotations:\n        sidecar.istio.io/inject: \"false\"")?;
    writeln!(out, "    spec:")?;
    writeln!(out, "      restartPolicy: OnFailure")?;
    pod_security(out, &job)?;
    let args = format!(r#"["migrate", "--user", "{schema}_owner", "--password-file", "/etc/estate/migrate/password"]"#);
    one_shot_container(out, t, name, "migrate", &args)?;
    for (volume, path) in
        [("config", "/etc/estate/config"), ("tls", "/etc/estate/tls"), ("owner", "/etc/estate/migrate")]
    {
        writeln!(out, "            - name: {volume}\n              mountPath: {path}\n              readOnly: true")?;
    }
    config_and_tls_volumes(out, name)?;
    writeln!(
        out,
        "        - name: owner\n          secret:\n            secretName: {name}-db-owner\n            defaultMode: 0400"
    )?;
    Ok(())
}

/// The head of one YAML document: `---`, an optional comment, apiVersion, kind, name, namespace.
fn document(out: &mut String, comment: &str, api_version: &str, kind: &str, name: &str, ns: &str) -> std::fmt::Result {
    writeln!(out, "---")?;
    if !comment.is_empty() {
        writeln!(out, "# {comment}")?;
    }
    writeln!(out, "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {ns}")
}

/// An egress rule to the cluster DNS (kube-system, port 53 UDP and TCP).
fn dns_egress(out: &mut String, indent: &str) -> std::fmt::Result {
    namespace_selector(out, &format!("{indent}    "), "kube-system")?;
    writeln!(
        out,
        "{indent}  ports:\n{indent}    - protocol: UDP\n{indent}      port: 53\n{indent}    - protocol: TCP\n{indent}      port: 53"
    )
}

fn namespace_selector(out: &mut String, indent: &str, namespace: &str) -> std::fmt::Result {
    writeln!(out, "{indent}- namespaceSelector:")?;
    writeln!(out, "{indent}    matchLabels:\n{indent}      kubernetes.io/metadata.name: {namespace}")
}

fn network_policies(sources: &Sources) -> Result<String> {
    let t = &sources.topology;
    let infra = &t.infrastructure;
    let ns = &t.namespace;
    let mut out = String::from(HEADER);
    // Default deny, both directions, for every pod of the namespace.
    document(&mut out, "", "networking.k8s.io/v1", "NetworkPolicy", "default-deny", ns)?;
    writeln!(out, "spec:\n  podSelector: {{}}\n  policyTypes:\n    - Ingress\n    - Egress")?;
    let auth = sources.service("auth").context("infra/topology.toml has no auth service")?;
    for s in &t.service {
        let name = &s.name;
        document(&mut out, "", "networking.k8s.io/v1", "NetworkPolicy", name, ns)?;
        writeln!(out, "spec:\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: {name}")?;
        writeln!(out, "  policyTypes:\n    - Ingress\n    - Egress\n  ingress:")?;
        // East-west callers (from the policy files), plus every workload for auth's
        // token, JWKS and revocation endpoints.
        let mut callers: Vec<String> = sources.callers_of(name).to_vec();
        if name == "auth" {
            callers = t.service.iter().filter(|c| c.name != "auth").map(|c| c.name.clone()).collect();
        }
        if !callers.is_empty() {
            writeln!(out, "    - from:")?;
            for caller in &callers {
                writeln!(
                    out,
                    "        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: {caller}"
                )?;
            }
            writeln!(out, "      ports:\n        - protocol: TCP\n          port: {}", s.api_port)?;
        }
        if s.public {
            writeln!(out, "    - from:")?;
            namespace_selector(&mut out, "        ", &infra.ingress.namespace)?;
            writeln!(out, "      ports:\n        - protocol: TCP\n          port: {}", s.api_port)?;
        }
        writeln!(out, "    - from:")?;
        namespace_selector(&mut out, "        ", &infra.monitoring.namespace)?;
        writeln!(out, "      ports:\n        - protocol: TCP\n          port: {}", s.management_port)?;
        writeln!(out, "  egress:")?;
        writeln!(out, "    - to:")?;
        dns_egress(&mut out, "    ")?;
        let mut callees: Vec<(&str, u16)> =
            sources.callees_of(name).iter().map(|c| (c.name.as_str(), c.api_port)).collect();
        if name != "auth" {
            callees.push(("auth", auth.api_port));
        }
        for (callee, port) in callees {
            writeln!(
                out,
                "    - to:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: {callee}"
            )?;
            writeln!(out, "      ports:\n        - protocol: TCP\n          port: {port}")?;
        }
        let mut infrastructure = vec![&infra.openbao, &infra.siem];
        if s.database {
            infrastructure.push(&infra.postgres);
        }
        for endpoint in infrastructure {
            writeln!(out, "    - to:")?;
            namespace_selector(&mut out, "        ", &endpoint.namespace)?;
            writeln!(out, "      ports:\n        - protocol: TCP\n          port: {}", endpoint.port)?;
        }
        if s.internet_egress {
            // Public addresses only (estate-egress also refuses internal ones at connect time).
            writeln!(out, "    - to:\n        - ipBlock:\n            cidr: 0.0.0.0/0\n            except:")?;
            for cidr in
                ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8"]
            {
                writeln!(out, "              - {cidr}")?;
            }
            writeln!(out, "      ports:\n        - protocol: TCP\n          port: 443")?;
        }
        if s.signing_keys {
            // The key rotation runs: DNS, OpenBao and the SIEM, nothing else, nothing in.
            let job = format!("{name}-keys");
            let comment = format!("{job}: runs `{name} keys rotate`.");
            document(&mut out, &comment, "networking.k8s.io/v1", "NetworkPolicy", &job, ns)?;
            writeln!(out, "spec:\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: {job}")?;
            writeln!(out, "  policyTypes:\n    - Ingress\n    - Egress\n  ingress: []\n  egress:\n    - to:")?;
            dns_egress(&mut out, "    ")?;
            for endpoint in [&infra.openbao, &infra.siem] {
                writeln!(out, "    - to:")?;
                namespace_selector(&mut out, "        ", &endpoint.namespace)?;
                writeln!(out, "      ports:\n        - protocol: TCP\n          port: {}", endpoint.port)?;
            }
        }
        if let Some(schema) = &s.schema {
            // The migration Job: DNS and Postgres, nothing else, nothing in.
            let job = format!("{name}-migrate");
            let comment = format!("{job}: runs `{name} migrate` as {schema}_owner.");
            document(&mut out, &comment, "networking.k8s.io/v1", "NetworkPolicy", &job, ns)?;
            writeln!(out, "spec:\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: {job}")?;
            writeln!(out, "  policyTypes:\n    - Ingress\n    - Egress\n  ingress: []\n  egress:\n    - to:")?;
            dns_egress(&mut out, "    ")?;
            writeln!(out, "    - to:")?;
            namespace_selector(&mut out, "        ", &infra.postgres.namespace)?;
            writeln!(out, "      ports:\n        - protocol: TCP\n          port: {}", infra.postgres.port)?;
        }
    }
    Ok(out)
}

fn istio(sources: &Sources) -> Result<String> {
    let t = &sources.topology;
    let infra = &t.infrastructure;
    let ns = &t.namespace;
    let mut out = String::from(HEADER);
    // Mesh mTLS only, no plaintext, in the whole namespace.
    document(&mut out, "", "security.istio.io/v1", "PeerAuthentication", "default", ns)?;
    writeln!(out, "spec:\n  mtls:\n    mode: STRICT")?;
    // An ALLOW policy with no rules matches nothing: everything not allowed below is denied.
    document(&mut out, "", "security.istio.io/v1", "AuthorizationPolicy", "deny-by-default", ns)?;
    writeln!(out, "spec: {{}}")?;
    for s in &t.service {
        let name = &s.name;
        let mut api_callers: Vec<String> = sources.callers_of(name).iter().map(|c| sources.principal(ns, c)).collect();
        if name == "auth" {
            api_callers =
                t.service.iter().filter(|c| c.name != "auth").map(|c| sources.principal(ns, &c.name)).collect();
        }
        if s.public {
            api_callers.push(sources.principal(&infra.ingress.namespace, &infra.ingress.service_account));
        }
        document(&mut out, "", "security.istio.io/v1", "AuthorizationPolicy", name, ns)?;
        writeln!(
            out,
            "spec:\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: {name}\n  action: ALLOW\n  rules:"
        )?;
        if !api_callers.is_empty() {
            writeln!(out, "    - from:\n        - source:\n            principals:")?;
            for principal in &api_callers {
                writeln!(out, "              - {principal}")?;
            }
            writeln!(out, "      to:\n        - operation:\n            ports:\n              - \"{}\"", s.api_port)?;
        }
        let monitoring = sources.principal(&infra.monitoring.namespace, &infra.monitoring.service_account);
        writeln!(out, "    - from:\n        - source:\n            principals:\n              - {monitoring}")?;
        writeln!(
            out,
            "      to:\n        - operation:\n            ports:\n              - \"{}\"",
            s.management_port
        )?;
    }
    // The way in: the ingress gateway passes TLS through, by SNI, to the
    // public workloads, which terminate it themselves (their certificates,
    // their security headers); the edge never holds a key or sees plaintext.
    let public: Vec<(&Service, &str)> =
        t.service.iter().filter(|s| s.public).filter_map(|s| s.public_host.as_deref().map(|h| (s, h))).collect();
    if !public.is_empty() {
        document(&mut out, "", "networking.istio.io/v1", "Gateway", "estate", ns)?;
        writeln!(out, "spec:\n  selector:\n    istio: ingressgateway\n  servers:")?;
        writeln!(out, "    - port:\n        number: 443\n        name: tls\n        protocol: TLS")?;
        writeln!(out, "      tls:\n        mode: PASSTHROUGH\n      hosts:")?;
        for (_, host) in &public {
            writeln!(out, "        - {host}")?;
        }
        for (s, host) in &public {
            document(&mut out, "", "networking.istio.io/v1", "VirtualService", &s.name, ns)?;
            writeln!(out, "spec:\n  hosts:\n    - {host}\n  gateways:\n    - estate\n  tls:")?;
            writeln!(out, "    - match:\n        - port: 443\n          sniHosts:\n            - {host}")?;
            writeln!(
                out,
                "      route:\n        - destination:\n            host: {}.{ns}.svc.cluster.local\n            port:\n              number: 443",
                s.name
            )?;
        }
    }
    Ok(out)
}

/// Write the generated files.
pub(crate) fn generate(root: &Path) -> Result<()> {
    let sources = Sources::load(root)?;
    for (path, contents) in render(&sources)? {
        let full = root.join(&path);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&full, contents).with_context(|| format!("{}", full.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Fail when a generated file differs from what the sources say.
pub(crate) fn check_fresh(root: &Path) -> Result<()> {
    let sources = Sources::load(root)?;
    let mut stale = Vec::new();
    for (path, contents) in render(&sources)? {
        if std::fs::read_to_string(root.join(&path)).ok().as_deref() != Some(contents.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    if !stale.is_empty() {
        bail!("generated files are stale (run `cargo xtask gen-infra` and commit): {}", stale.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The generated policies follow the east-west policy files, edge for edge.
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    /// The YAML document of `kind`/`name` in `text`.
    fn document<'a>(text: &'a str, kind: &str, name: &str) -> &'a str {
        text.split("\n---\n")
            .find(|d| d.contains(&format!("kind: {kind}\n")) && d.contains(&format!("  name: {name}\n")))
            .unwrap()
    }

    #[test]
    fn pc06_network_and_istio_policies_allow_exactly_the_east_west_edges() {
        let sources = Sources::load(&crate::root()).unwrap();
        let files = render(&sources).unwrap();
        let istio = &files[Path::new("k8s/base/generated/istio.yaml")];
        let network = &files[Path::new("k8s/base/generated/network-policies.yaml")];
        // inventory: only order may call its API (infra/east-west/inventory.toml).
        let inventory = document(istio, "AuthorizationPolicy", "inventory");
        assert!(inventory.contains("estate.local/ns/estate/sa/order"), "{inventory}");
        assert!(!inventory.contains("sa/gateway") && !inventory.contains("sa/payment"), "{inventory}");
        let inventory = document(network, "NetworkPolicy", "inventory");
        let ingress = inventory.split("  egress:").next().unwrap();
        assert!(ingress.contains("app.kubernetes.io/name: order"), "{ingress}");
        assert!(!ingress.contains("app.kubernetes.io/name: gateway"), "{ingress}");
        // payment: order and the gateway; order: the gateway only.
        let payment = document(istio, "AuthorizationPolicy", "payment");
        assert!(payment.contains("sa/order") && payment.contains("sa/gateway"), "{payment}");
        let order = document(istio, "AuthorizationPolicy", "order");
        assert!(order.contains("sa/gateway") && !order.contains("sa/payment"), "{order}");
        // The namespace denies by default, in both layers.
        assert!(network.contains("name: default-deny"));
        assert!(istio.contains("name: deny-by-default") && istio.contains("mode: STRICT"));
    }

    #[test]
    fn pc05_each_schema_is_migrated_by_a_job_as_its_owner_that_reaches_only_postgres() {
        let sources = Sources::load(&crate::root()).unwrap();
        let files = render(&sources).unwrap();
        let workloads = &files[Path::new("k8s/base/generated/workloads.yaml")];
        let network = &files[Path::new("k8s/base/generated/network-policies.yaml")];
        for (service, schema) in
            [("auth", "auth"), ("order", "orders"), ("payment", "payments"), ("inventory", "inventory")]
        {
            let job = document(workloads, "Job", &format!("{service}-migrate"));
            assert!(
                job.contains(&format!("args: [\"migrate\", \"--user\", \"{schema}_owner\", \"--password-file\"")),
                "{job}"
            );
            assert!(
                job.contains(&format!("secretName: {service}-db-owner")) && job.contains("defaultMode: 0400"),
                "{job}"
            );
            assert!(job.contains(&format!("serviceAccountName: {service}-migrate")), "its own ServiceAccount: {job}");
            // The service itself never gets the owner's password.
            let deployment = document(workloads, "Deployment", service);
            assert!(!deployment.contains("db-owner"), "{deployment}");
            let policy = document(network, "NetworkPolicy", &format!("{service}-migrate"));
            assert!(policy.contains("ingress: []") && policy.contains("port: 5432"), "{policy}");
            assert!(!policy.contains("port: 8200") && !policy.contains("port: 8443"), "only Postgres: {policy}");
        }
        // The gateway has no schema and no Job.
        assert!(!workloads.contains("name: gateway-migrate"));
    }

    #[test]
    fn the_ingress_passes_tls_through_to_exactly_the_public_workloads() {
        let sources = Sources::load(&crate::root()).unwrap();
        let files = render(&sources).unwrap();
        let istio = &files[Path::new("k8s/base/generated/istio.yaml")];
        let workloads = &files[Path::new("k8s/base/generated/workloads.yaml")];
        let gateway = document(istio, "Gateway", "estate");
        assert!(gateway.contains("mode: PASSTHROUGH"), "{gateway}");
        for (service, host) in [("auth", "auth.estate.local"), ("gateway", "api.estate.local")] {
            assert!(gateway.contains(&format!("- {host}")), "{gateway}");
            let route = document(istio, "VirtualService", service);
            assert!(route.contains(&format!("host: {service}.estate.svc.cluster.local")), "{route}");
            // The Service has the port the route names.
            let svc = document(workloads, "Service", service);
            assert!(svc.contains("port: 443"), "{svc}");
        }
        for private in ["order", "payment", "inventory"] {
            assert!(!istio.contains(&format!("kind: VirtualService\nmetadata:\n  name: {private}\n")), "{private}");
        }
    }

    #[test]
    fn the_signing_keys_rotate_monthly_in_runs_that_reach_only_openbao_and_the_siem() {
        let sources = Sources::load(&crate::root()).unwrap();
        let files = render(&sources).unwrap();
        let workloads = &files[Path::new("k8s/base/generated/workloads.yaml")];
        let network = &files[Path::new("k8s/base/generated/network-policies.yaml")];
        let cron = document(workloads, "CronJob", "auth-keys");
        assert!(cron.contains("schedule: \"0 3 1 * *\"") && cron.contains("concurrencyPolicy: Forbid"), "{cron}");
        assert!(cron.contains("args: [\"keys\", \"rotate\"]") && cron.contains("serviceAccountName: auth"), "{cron}");
        assert!(cron.contains("sidecar.istio.io/inject: \"false\"") && cron.contains("audience: openbao"), "{cron}");
        let policy = document(network, "NetworkPolicy", "auth-keys");
        assert!(policy.contains("ingress: []") && policy.contains("port: 8200") && policy.contains("port: 6514"));
        assert!(
            !policy.contains("port: 5432") && !policy.contains("port: 8443"),
            "OpenBao and the SIEM only: {policy}"
        );
        // Only auth holds signing keys.
        assert_eq!(workloads.matches("kind: CronJob").count(), 1);
    }
}
