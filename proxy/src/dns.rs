//! Cluster DNS, as CoreDNS's `kubernetes` plugin answers it (the names of the Kubernetes DNS
//! specification), served on the hickory-dns server crates:
//!
//! - `SVC.NS.svc.DOMAIN`: A/AAAA with the Service's cluster IPs; a headless Service answers
//!   with its endpoints' addresses (ready ones, or all with `publishNotReadyAddresses`), each
//!   also under `HOSTNAME.SVC.NS.svc.DOMAIN` (the endpoint's hostname, else its dashed IP);
//! - `_PORT._PROTO.SVC.NS.svc.DOMAIN`: SRV for each named port (and `SVC.NS.svc.DOMAIN` SRV
//!   for all of them), aiming at the Service name or, headless, at each endpoint's name;
//! - an ExternalName Service: a CNAME to its external name, followed so A/AAAA queries also
//!   get the target's addresses;
//! - `A-B-C-D.NS.pod.DOMAIN`: that pod IP (CoreDNS's `pods insecure`, kubeadm's default);
//! - PTR for cluster IPs and headless endpoints;
//! - NXDOMAIN (with the zone's SOA) for other names in the cluster domain, and every name
//!   outside it, or a reverse name we do not know, forwarded to the upstream servers (the
//!   node's own `/etc/resolv.conf`, as CoreDNS's `forward . /etc/resolv.conf`).
//!
//! [`ClusterDns`] is the hickory [`RequestHandler`]; [`Zone`] the records, rebuilt from
//! Services and EndpointSlices by [`run`] whenever they change; [`serve`] binds UDP and TCP;
//! [`register`] publishes a node's server as the `kube-dns` Service in `kube-system`.
//!
//! ```no_run
//! use bosun_proxy::dns::{self, ClusterDns, DnsConfig, Zone};
//! # async fn f(services: Vec<serde_json::Value>, slices: Vec<serde_json::Value>) {
//! let dns = ClusterDns::new(DnsConfig::default());
//! dns.set_zone(Zone::build("cluster.local", &services, &slices));
//! let (mut server, _addr) = dns::serve(dns, "127.0.0.1:10053".parse().unwrap()).await.unwrap();
//! server.block_until_done().await.ok();
//! # }
//! ```

use crate::{Error, Result};
use bosun_api_types::core::v1::Service;
use bosun_api_types::discovery::v1::EndpointSlice;
use bosun_client::{Api, Client, Patch, PatchParams};
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the cluster DNS answers.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// TTL of the cluster's records (kubeadm's Corefile: 30 s).
    pub ttl: u32,
    /// Where names outside the cluster go.
    pub upstreams: Vec<SocketAddr>,
    /// How long to wait for one upstream.
    pub upstream_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            domain: "cluster.local".into(),
            ttl: 30,
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
        }
    }
}

/// The nameservers of a `resolv.conf` text, on port 53; loopback ones are left out (a local
/// stub such as systemd-resolved's would not be reachable from where pods' queries arrive, and
/// could send queries back to us).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.split(['#', ';']).next())
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
        })
        .filter(|ip| !ip.is_loopback())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// What the cluster's records say of one name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Entry {
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    /// (port, target) pairs.
    srv: Vec<(u16, String)>,
    cname: Option<String>,
    ptr: Vec<String>,
}

/// The cluster's DNS records, from Services and EndpointSlices. Names are kept lower-case,
/// without the final dot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    domain: String,
    names: HashMap<String, Entry>,
    /// Namespaces with at least one Service (`NS.svc.DOMAIN` exists).
    namespaces: std::collections::HashSet<String>,
    serial: u32,
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The reverse name of an address, without the final dot.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

impl Entry {
    fn add_ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) if !self.a.contains(&v4) => self.a.push(v4),
            IpAddr::V6(v6) if !self.aaaa.contains(&v6) => self.aaaa.push(v6),
            _ => {}
        }
    }
}

impl Zone {
    /// The records of `services` and `slices` (JSON objects as the API serves them) under
    /// `domain`.
    pub fn build(domain: &str, services: &[Value], slices: &[Value]) -> Zone {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut zone = Zone {
            domain: domain.clone(),
            serial: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1),
            ..Default::default()
        };
        // Slices by (namespace, service).
        let mut by_service: BTreeMap<(&str, &str), Vec<&Value>> = BTreeMap::new();
        for s in slices {
            let ns = str_of(&s["metadata"], "namespace");
            let Some(svc) = s["metadata"]["labels"]["kubernetes.io/service-name"].as_str() else {
                continue;
            };
            by_service.entry((ns, svc)).or_default().push(s);
        }
        for svc in services {
            let ns = str_of(&svc["metadata"], "namespace").to_ascii_lowercase();
            let name = str_of(&svc["metadata"], "name").to_ascii_lowercase();
            if ns.is_empty() || name.is_empty() {
                continue;
            }
            zone.namespaces.insert(ns.clone());
            let spec = &svc["spec"];
            let base = format!("{name}.{ns}.svc.{domain}");
            if str_of(spec, "type") == "ExternalName" {
                let target = str_of(spec, "externalName").trim_end_matches('.');
                if !target.is_empty() {
                    zone.names.entry(base).or_default().cname = Some(target.to_ascii_lowercase());
                }
                continue;
            }
            let mut ips: Vec<IpAddr> = spec["clusterIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::once(&spec["clusterIP"]))
                .filter_map(Value::as_str)
                .filter_map(|s| s.parse().ok())
                .collect();
            ips.sort();
            ips.dedup();
            let headless = str_of(spec, "clusterIP") == "None" || ips.is_empty();
            if !headless {
                let e = zone.names.entry(base.clone()).or_default();
                for ip in &ips {
                    e.add_ip(*ip);
                }
                for p in spec["ports"].as_array().into_iter().flatten() {
                    let Some(port) = p["port"].as_u64().and_then(|n| u16::try_from(n).ok()) else {
                        continue;
                    };
                    zone.add_srv(&base, str_of(p, "name"), p, port, &base);
                }
                for ip in ips {
                    zone.names
                        .entry(reverse_name(ip))
                        .or_default()
                        .ptr
                        .push(base.clone());
                }
                continue;
            }
            // Headless: the endpoints themselves.
            zone.names.entry(base.clone()).or_default();
            let publish_all = spec["publishNotReadyAddresses"].as_bool().unwrap_or(false);
            for slice in by_service
                .get(&(
                    str_of(&svc["metadata"], "namespace"),
                    str_of(&svc["metadata"], "name"),
                ))
                .into_iter()
                .flatten()
            {
                let ports = slice["ports"].as_array().cloned().unwrap_or_default();
                for ep in slice["endpoints"].as_array().into_iter().flatten() {
                    let ready = ep["conditions"]["ready"].as_bool().unwrap_or(true);
                    if !ready && !publish_all {
                        continue;
                    }
                    for ip in ep["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .filter_map(|s| s.parse::<IpAddr>().ok())
                    {
                        let host = ep["hostname"]
                            .as_str()
                            .map(str::to_ascii_lowercase)
                            .unwrap_or_else(|| dashed(ip));
                        let target = format!("{host}.{base}");
                        zone.names.entry(base.clone()).or_default().add_ip(ip);
                        zone.names.entry(target.clone()).or_default().add_ip(ip);
                        zone.names
                            .entry(reverse_name(ip))
                            .or_default()
                            .ptr
                            .push(target.clone());
                        for p in &ports {
                            let Some(port) = p["port"].as_u64().and_then(|n| u16::try_from(n).ok())
                            else {
                                continue;
                            };
                            zone.add_srv(&base, str_of(p, "name"), p, port, &target);
                        }
                    }
                }
            }
        }
        zone
    }

    fn add_srv(&mut self, base: &str, port_name: &str, port: &Value, number: u16, target: &str) {
        let proto = match port["protocol"].as_str().unwrap_or("TCP") {
            "UDP" => "udp",
            "SCTP" => "sctp",
            _ => "tcp",
        };
        let pair = (number, target.to_owned());
        if !port_name.is_empty() {
            let srv = &mut self
                .names
                .entry(format!(
                    "_{}._{proto}.{base}",
                    port_name.to_ascii_lowercase()
                ))
                .or_default()
                .srv;
            if !srv.contains(&pair) {
                srv.push(pair.clone());
            }
        }
        let srv = &mut self.names.entry(base.to_owned()).or_default().srv;
        if !srv.contains(&pair) {
            srv.push(pair);
        }
    }

    /// How many names the zone holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the zone holds no names.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn in_zone(&self, name: &str) -> bool {
        name == self.domain
            || name
                .strip_suffix(&self.domain)
                .is_some_and(|rest| rest.ends_with('.'))
    }

    /// Whether `name` (in the zone, with no records of its own) exists as a branch: the apex,
    /// `svc.`, `pod.`, a namespace with Services, or a name above a record.
    fn branch_exists(&self, name: &str) -> bool {
        let Some(rest) = name.strip_suffix(&self.domain) else {
            return false;
        };
        let rest = rest.trim_end_matches('.');
        match rest.rsplit_once('.') {
            None => rest.is_empty() || rest == "svc" || rest == "pod",
            Some((ns, "svc")) if !ns.contains('.') => self.namespaces.contains(ns),
            Some((_, "pod")) => false,
            _ => false,
        }
    }

    fn soa(&self, ttl: u32) -> Option<Record> {
        let apex = Name::from_ascii(format!("{}.", self.domain)).ok()?;
        let mname = Name::from_ascii(format!("ns.dns.{}.", self.domain)).ok()?;
        let rname = Name::from_ascii(format!("hostmaster.{}.", self.domain)).ok()?;
        Some(Record::from_rdata(
            apex,
            ttl,
            RData::SOA(SOA::new(mname, rname, self.serial, 7200, 1800, 86400, ttl)),
        ))
    }
}

/// The answer to one question.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    /// The response code.
    pub code: ResponseCode,
    /// Whether the answer is the cluster's own (authoritative).
    pub authoritative: bool,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (the SOA of a negative answer).
    pub authorities: Vec<Record>,
    /// The additional section (addresses of SRV targets).
    pub additionals: Vec<Record>,
}

/// The cluster DNS server's request handler: answers from the [`Zone`], forwards the rest.
#[derive(Clone)]
pub struct ClusterDns {
    zone: Arc<RwLock<Arc<Zone>>>,
    config: Arc<DnsConfig>,
    queries: Arc<AtomicU64>,
}

fn name_of(s: &str) -> Option<Name> {
    Name::from_ascii(format!("{s}.")).ok()
}

impl ClusterDns {
    /// A server with an empty zone.
    pub fn new(config: DnsConfig) -> Self {
        let zone = Zone {
            domain: config.domain.trim_end_matches('.').to_ascii_lowercase(),
            ..Default::default()
        };
        ClusterDns {
            zone: Arc::new(RwLock::new(Arc::new(zone))),
            config: Arc::new(config),
            queries: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Replaces the records.
    pub fn set_zone(&self, zone: Zone) {
        if let Ok(mut z) = self.zone.write() {
            *z = Arc::new(zone);
        }
    }

    /// The records now served.
    pub fn zone(&self) -> Arc<Zone> {
        self.zone
            .read()
            .map(|z| Arc::clone(&z))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Queries answered so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// The answer to one question: from the zone, else from the upstream servers.
    pub async fn resolve(&self, qname: &Name, qtype: RecordType) -> Reply {
        let zone = self.zone();
        let name = qname.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        match self.local(&zone, &name, qname, qtype) {
            Some(mut reply) => {
                // Follow an ExternalName's CNAME for address queries.
                if let (Some(RData::CNAME(target)), RecordType::A | RecordType::AAAA) =
                    (reply.answers.first().map(|r| r.data.clone()), qtype)
                {
                    let target_name = target.0.clone();
                    let tname = target_name
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase();
                    let more = match self.local(&zone, &tname, &target_name, qtype) {
                        Some(r) => r.answers,
                        None => self
                            .forward_query(&target_name, qtype)
                            .await
                            .map(|m| m.answers)
                            .unwrap_or_default(),
                    };
                    reply.answers.extend(more);
                }
                reply
            }
            None => match self.forward_query(qname, qtype).await {
                Some(m) => Reply {
                    code: m.metadata.response_code,
                    authoritative: false,
                    answers: m.answers,
                    authorities: m.authorities,
                    additionals: m.additionals,
                },
                None => Reply {
                    code: ResponseCode::ServFail,
                    ..Default::default()
                },
            },
        }
    }

    /// The zone's answer, or `None` when the name is not the zone's to answer.
    fn local(&self, zone: &Zone, name: &str, qname: &Name, qtype: RecordType) -> Option<Reply> {
        let ttl = self.config.ttl;
        let reverse = name.ends_with(".in-addr.arpa") || name.ends_with(".ip6.arpa");
        let entry = zone.names.get(name);
        if reverse {
            // Reverse names of cluster addresses only; anything else is the upstream's.
            let e = entry?;
            let answers = e
                .ptr
                .iter()
                .filter(|_| qtype == RecordType::PTR || qtype == RecordType::ANY)
                .filter_map(|t| name_of(t))
                .map(|t| Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(t))))
                .collect();
            return Some(Reply {
                authoritative: true,
                answers,
                ..Default::default()
            });
        }
        if !zone.in_zone(name) {
            return None;
        }
        let mut reply = Reply {
            authoritative: true,
            ..Default::default()
        };
        let pod_ip = pod_record(&zone.domain, name);
        match (entry, pod_ip) {
            (Some(e), _) => {
                let want = |t: RecordType| qtype == t || qtype == RecordType::ANY;
                if let Some(c) = &e.cname {
                    if let Some(t) = name_of(c) {
                        reply.answers.push(Record::from_rdata(
                            qname.clone(),
                            ttl,
                            RData::CNAME(CNAME(t)),
                        ));
                    }
                    return Some(reply);
                }
                if want(RecordType::A) {
                    reply.answers.extend(
                        e.a.iter()
                            .map(|ip| Record::from_rdata(qname.clone(), ttl, RData::A(A(*ip)))),
                    );
                }
                if want(RecordType::AAAA) {
                    reply.answers.extend(
                        e.aaaa.iter().map(|ip| {
                            Record::from_rdata(qname.clone(), ttl, RData::AAAA(AAAA(*ip)))
                        }),
                    );
                }
                if want(RecordType::SRV) && !e.srv.is_empty() {
                    // Weights split 100 between the targets, as CoreDNS does.
                    let weight = (100 / e.srv.len()).max(1) as u16;
                    for (port, target) in &e.srv {
                        let Some(t) = name_of(target) else { continue };
                        reply.answers.push(Record::from_rdata(
                            qname.clone(),
                            ttl,
                            RData::SRV(SRV::new(0, weight, *port, t.clone())),
                        ));
                        if let Some(te) = zone.names.get(target.as_str()) {
                            reply
                                .additionals
                                .extend(te.a.iter().map(|ip| {
                                    Record::from_rdata(t.clone(), ttl, RData::A(A(*ip)))
                                }));
                            reply.additionals.extend(te.aaaa.iter().map(|ip| {
                                Record::from_rdata(t.clone(), ttl, RData::AAAA(AAAA(*ip)))
                            }));
                        }
                    }
                }
            }
            (None, Some(ip)) => match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => reply
                    .answers
                    .push(Record::from_rdata(qname.clone(), ttl, RData::A(A(v4)))),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => reply.answers.push(
                    Record::from_rdata(qname.clone(), ttl, RData::AAAA(AAAA(v6))),
                ),
                _ => {}
            },
            (None, None) if name == zone.domain => match qtype {
                RecordType::SOA => reply.answers.extend(zone.soa(ttl)),
                RecordType::NS => {
                    if let Some(ns) = name_of(&format!("ns.dns.{}", zone.domain)) {
                        reply.answers.push(Record::from_rdata(
                            qname.clone(),
                            ttl,
                            RData::NS(NS(ns)),
                        ));
                    }
                }
                _ => {}
            },
            (None, None) if zone.branch_exists(name) => {}
            (None, None) => reply.code = ResponseCode::NXDomain,
        }
        if reply.answers.is_empty() {
            reply.authorities.extend(zone.soa(ttl));
        }
        Some(reply)
    }

    /// Asks the upstream servers for `name`/`qtype` (recursion desired).
    async fn forward_query(&self, name: &Name, qtype: RecordType) -> Option<Message> {
        let mut msg = Message::new(crate::random() as u16, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(name.clone(), qtype));
        let bytes = msg.to_vec().ok()?;
        self.forward(&bytes).await
    }

    /// Sends `query` to each upstream in turn until one answers (over TCP when the UDP
    /// answer is truncated).
    async fn forward(&self, query: &[u8]) -> Option<Message> {
        for up in &self.config.upstreams {
            match tokio::time::timeout(self.config.upstream_timeout, exchange(*up, query)).await {
                Ok(Ok(m)) => return Some(m),
                Ok(Err(e)) => tracing::debug!(upstream = %up, error = %e, "upstream DNS failed"),
                Err(_) => tracing::debug!(upstream = %up, "upstream DNS timed out"),
            }
        }
        None
    }
}

/// `A-B-C-D.NS.pod.DOMAIN` → the address.
fn pod_record(domain: &str, name: &str) -> Option<IpAddr> {
    let rest = name.strip_suffix(domain)?.strip_suffix(".pod.")?;
    let (host, ns) = rest.split_once('.')?;
    if ns.is_empty() || ns.contains('.') {
        return None;
    }
    host.replace('-', ".")
        .parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .ok()
        .or_else(|| {
            host.replace('-', ":")
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .ok()
        })
}

async fn exchange(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let bind: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 4096];
    let id = u16::from_be_bytes([query[0], query[1]]);
    loop {
        let n = sock.recv(&mut buf).await?;
        let Ok(m) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if m.metadata.id != id {
            continue;
        }
        if !m.metadata.truncation {
            return Ok(m);
        }
        break;
    }
    // Truncated: again over TCP.
    let mut tcp = tokio::net::TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(|e| bad(e.to_string()))?;
    tcp.write_all(&len.to_be_bytes()).await?;
    tcp.write_all(query).await?;
    let n = tcp.read_u16().await?;
    let mut buf = vec![0u8; usize::from(n)];
    tcp.read_exact(&mut buf).await?;
    Message::from_vec(&buf).map_err(|e| bad(e.to_string()))
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let resp_edns = request.edns.as_ref().map(|e| {
            let mut r = Edns::new();
            r.set_max_payload(e.max_payload().max(512));
            r
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &resp_edns {
            builder.edns(e);
        }
        let queries = request.queries.queries();
        let reply = match (request.metadata.op_code, queries) {
            (OpCode::Query, [q]) => {
                let reply = self.resolve(q.original().name(), q.query_type()).await;
                Some(reply)
            }
            (OpCode::Query, _) => {
                metadata.response_code = ResponseCode::FormErr;
                None
            }
            _ => {
                metadata.response_code = ResponseCode::NotImp;
                None
            }
        };
        let sent = match reply {
            Some(reply) => {
                metadata.response_code = reply.code;
                metadata.authoritative = reply.authoritative;
                let response = builder.build(
                    metadata,
                    reply.answers.iter(),
                    reply.authorities.iter(),
                    std::iter::empty(),
                    reply.additionals.iter(),
                );
                response_handle.send_response(response).await
            }
            None => {
                response_handle
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
        };
        sent.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "sending a DNS response");
            let mut m = Metadata::response_from_request(&request.metadata);
            m.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata: m,
                counts: HeaderCounts::default(),
            })
        })
    }
}

/// Serves `dns` on UDP and TCP at `addr` (port 0: any free port, the same for both).
/// Returns the server and the address it listens on.
pub async fn serve(dns: ClusterDns, addr: SocketAddr) -> Result<(Server<ClusterDns>, SocketAddr)> {
    let io = |e: std::io::Error| Error::Dns(format!("binding {addr}: {e}"));
    // With port 0 the UDP port picked may be taken for TCP: pick again a few times.
    let mut attempts = if addr.port() == 0 { 16 } else { 1 };
    let (udp, tcp, bound) = loop {
        attempts -= 1;
        let udp = tokio::net::UdpSocket::bind(addr).await.map_err(io)?;
        let bound = udp.local_addr().map_err(io)?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => break (udp, tcp, bound),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts > 0 => continue,
            Err(e) => return Err(io(e)),
        }
    };
    let mut server = Server::new(dns);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(10), 32);
    Ok((server, bound))
}

/// Keeps `dns`'s zone up to date with `client`'s Services and EndpointSlices until
/// `shutdown` (changes settle for 100 ms before a rebuild).
pub async fn run(client: Client, dns: ClusterDns, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut watch = crate::runner::ServiceWatch::new(client);
    tokio::select! {
        _ = &mut shutdown => return,
        _ = watch.ready() => {}
    }
    loop {
        match watch.objects() {
            Ok((services, slices)) => {
                let zone = Zone::build(&dns.config.domain, &services, &slices);
                tracing::debug!(names = zone.len(), "cluster DNS zone rebuilt");
                dns.set_zone(zone);
            }
            Err(e) => tracing::warn!(error = %e, "reading Services and EndpointSlices"),
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = watch.changed() => {}
        }
        watch.settle(Duration::from_millis(100)).await;
    }
}

/// The `kube-dns` Service's name and namespace.
pub const SERVICE: (&str, &str) = ("kube-system", "kube-dns");
const MANAGER: &str = "bosun-dns";

/// Publishes a node's DNS server: the `kube-dns` Service in `kube-system` (selector-less, at
/// `cluster_ip`, ports 53 UDP/TCP to `port`) and an EndpointSlice `kube-dns-NODE` with
/// `node_ip`. Both are applied server-side, so every node's agent can run this.
pub async fn register(
    client: &Client,
    cluster_ip: IpAddr,
    node: &str,
    node_ip: IpAddr,
    port: u16,
) -> Result<()> {
    let (ns, name) = SERVICE;
    let api = |e: bosun_client::Error| Error::Api(e.to_string());
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {
            "k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": cluster_ip.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port}]}
    });
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let params = PatchParams::apply(MANAGER).force();
    services
        .patch(name, &params, &Patch::Apply(&service))
        .await
        .map_err(api)?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": slice_name(node), "namespace": ns, "labels": {
            "kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": MANAGER}},
        "addressType": if node_ip.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [node_ip.to_string()], "nodeName": node,
            "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "dns", "port": port, "protocol": "UDP"},
                  {"name": "dns-tcp", "port": port, "protocol": "TCP"}]
    });
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    slices
        .patch(&slice_name(node), &params, &Patch::Apply(&slice))
        .await
        .map_err(api)?;
    Ok(())
}

/// Withdraws a node's DNS server (its EndpointSlice), as an agent does when it stops.
pub async fn unregister(client: &Client, node: &str) -> Result<()> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), SERVICE.0);
    match slices.delete(&slice_name(node), &Default::default()).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(Error::Api(e.to_string())),
    }
}

/// Keeps a node's DNS server published ([`register`] now and every minute, so a deleted
/// Service or slice comes back) until `shutdown`, then withdraws it ([`unregister`]).
pub async fn publish(
    client: Client,
    cluster_ip: IpAddr,
    node: String,
    node_ip: IpAddr,
    port: u16,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let wait = match register(&client, cluster_ip, &node, node_ip, port).await {
            Ok(()) => Duration::from_secs(60),
            Err(e) => {
                tracing::warn!(error = %e, "publishing the cluster DNS; retrying");
                Duration::from_secs(2)
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if let Err(e) = unregister(&client, &node).await {
        tracing::warn!(error = %e, "withdrawing the cluster DNS");
    }
}

fn slice_name(node: &str) -> String {
    format!("kube-dns-{node}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn zone() -> Zone {
        let services = vec![
            json!({"metadata": {"name": "web", "namespace": "default"},
                   "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}}),
            json!({"metadata": {"name": "db", "namespace": "prod"},
                   "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
            json!({"metadata": {"name": "ext", "namespace": "default"},
                   "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}}),
        ];
        let slices = vec![json!({
            "metadata": {"name": "db-1", "namespace": "prod", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.1.6"], "conditions": {"ready": true}},
                {"addresses": ["10.244.1.7"], "conditions": {"ready": false}}],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
        })];
        Zone::build("cluster.local", &services, &slices)
    }

    fn dns() -> ClusterDns {
        let d = ClusterDns::new(DnsConfig::default());
        d.set_zone(zone());
        d
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn data(r: &Reply) -> Vec<String> {
        let mut v: Vec<String> = r.answers.iter().map(|r| r.data.to_string()).collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn services_and_endpoints() {
        let d = dns();
        let r = d
            .resolve(&n("web.default.svc.cluster.local."), RecordType::A)
            .await;
        assert_eq!(r.code, ResponseCode::NoError);
        assert!(r.authoritative);
        assert_eq!(data(&r), ["10.96.0.20"]);
        // Case does not matter.
        let r = d
            .resolve(&n("WEB.Default.svc.cluster.local."), RecordType::A)
            .await;
        assert_eq!(data(&r), ["10.96.0.20"]);
        // Headless: the ready endpoints.
        let r = d
            .resolve(&n("db.prod.svc.cluster.local."), RecordType::A)
            .await;
        assert_eq!(data(&r), ["10.244.1.5", "10.244.1.6"]);
        let r = d
            .resolve(&n("db-0.db.prod.svc.cluster.local."), RecordType::A)
            .await;
        assert_eq!(data(&r), ["10.244.1.5"]);
        let r = d
            .resolve(&n("10-244-1-6.db.prod.svc.cluster.local."), RecordType::A)
            .await;
        assert_eq!(data(&r), ["10.244.1.6"]);
        // Not ready: not published.
        let r = d
            .resolve(&n("10-244-1-7.db.prod.svc.cluster.local."), RecordType::A)
            .await;
        assert_eq!(r.code, ResponseCode::NXDomain);
        assert_eq!(r.authorities.len(), 1, "SOA with the negative answer");
    }

    #[tokio::test]
    async fn srv_ptr_cname_pods_and_misses() {
        let d = dns();
        let r = d
            .resolve(
                &n("_http._tcp.web.default.svc.cluster.local."),
                RecordType::SRV,
            )
            .await;
        assert_eq!(data(&r), ["0 100 80 web.default.svc.cluster.local."]);
        assert_eq!(r.additionals.len(), 1);
        let r = d
            .resolve(&n("_pg._tcp.db.prod.svc.cluster.local."), RecordType::SRV)
            .await;
        assert_eq!(
            data(&r),
            [
                "0 50 5432 10-244-1-6.db.prod.svc.cluster.local.",
                "0 50 5432 db-0.db.prod.svc.cluster.local."
            ]
        );
        let r = d
            .resolve(&n("20.0.96.10.in-addr.arpa."), RecordType::PTR)
            .await;
        assert_eq!(data(&r), ["web.default.svc.cluster.local."]);
        let r = d
            .resolve(&n("5.1.244.10.in-addr.arpa."), RecordType::PTR)
            .await;
        assert_eq!(data(&r), ["db-0.db.prod.svc.cluster.local."]);
        // ExternalName: the CNAME, followed.
        let r = d
            .resolve(&n("ext.default.svc.cluster.local."), RecordType::A)
            .await;
        assert_eq!(data(&r), ["10.96.0.20", "web.default.svc.cluster.local."]);
        let r = d
            .resolve(&n("10-244-3-9.any.pod.cluster.local."), RecordType::A)
            .await;
        assert_eq!(data(&r), ["10.244.3.9"]);
        // A name that exists without the type asked: NODATA; a namespace: NODATA; else NXDOMAIN.
        let r = d
            .resolve(&n("web.default.svc.cluster.local."), RecordType::AAAA)
            .await;
        assert_eq!(
            (r.code, r.answers.len(), r.authorities.len()),
            (ResponseCode::NoError, 0, 1)
        );
        let r = d
            .resolve(&n("default.svc.cluster.local."), RecordType::A)
            .await;
        assert_eq!(r.code, ResponseCode::NoError);
        for miss in [
            "nope.default.svc.cluster.local.",
            "web.nope.svc.cluster.local.",
            "x.cluster.local.",
        ] {
            let r = d.resolve(&n(miss), RecordType::A).await;
            assert_eq!(r.code, ResponseCode::NXDomain, "{miss}");
        }
        let r = d.resolve(&n("cluster.local."), RecordType::SOA).await;
        assert_eq!(r.answers.len(), 1);
        // Outside the zone with no upstream: SERVFAIL.
        let r = d.resolve(&n("example.com."), RecordType::A).await;
        assert_eq!(r.code, ResponseCode::ServFail);
    }

    #[test]
    fn resolv_conf_upstreams() {
        let ups = upstreams_from_resolv_conf(
            "# x\nnameserver 192.0.2.53\nnameserver 127.0.0.53\nnameserver 2001:db8::1 ; y\nsearch a\n",
        );
        assert_eq!(
            ups,
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }
}
