#include "launcher/control/etcd_pool.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"

namespace kindling::control {
namespace {

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  return absl::UnavailableError(absl::StrCat("etcd ", what, ": ", s.error_message(), " (gRPC ",
                                             static_cast<int>(s.error_code()), ")"));
}

std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

// "http://a:1,b:2" -> "ipv4:a:1,b:2" when every host is an IPv4 literal
// (gRPC then picks among them); otherwise the first endpoint, by DNS.
absl::StatusOr<std::string> Target(const std::string& endpoints) {
  std::vector<std::string> hosts;
  bool all_ipv4 = true;
  for (absl::string_view e : absl::StrSplit(endpoints, ',', absl::SkipWhitespace())) {
    absl::ConsumePrefix(&e, "http://");
    if (e.empty() || e.find('/') != absl::string_view::npos || e.size() > 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("etcd endpoint '", e, "': expected HOST:PORT or http://HOST:PORT"));
    }
    all_ipv4 = all_ipv4 && e.find_first_not_of("0123456789.:") == absl::string_view::npos;
    hosts.emplace_back(e);
  }
  if (hosts.empty()) return absl::InvalidArgumentError("no etcd endpoint given");
  if (all_ipv4) return absl::StrCat("ipv4:", absl::StrJoin(hosts, ","));
  return absl::StrCat("dns:///", hosts[0]);
}

// The smallest key greater than every key that starts with `prefix`.
std::string RangeEnd(std::string prefix) {
  prefix.back() = static_cast<char>(prefix.back() + 1);
  return prefix;
}

}  // namespace

std::string EtcdPool::Prefix(const std::string& pool) {
  return absl::StrCat("/kindling/pools/", pool, "/hosts/");
}

absl::Status EtcdPool::ValidateName(const std::string& what, const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64 &&
            name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789._-") == std::string::npos &&
            name != "." && name != "..";
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " '", name, "': expected 1 to 64 of A-Z a-z 0-9 . _ -"));
}

EtcdPool::EtcdPool(std::shared_ptr<grpc::Channel> channel, std::string pool,
                   absl::Duration timeout)
    : channel_(std::move(channel)), pool_(std::move(pool)), timeout_(timeout) {}

absl::StatusOr<std::unique_ptr<EtcdPool>> EtcdPool::Connect(const std::string& endpoints,
                                                            const std::string& pool,
                                                            absl::Duration timeout) {
  if (absl::Status s = ValidateName("pool", pool); !s.ok()) return s;
  absl::StatusOr<std::string> target = Target(endpoints);
  if (!target.ok()) return target.status();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(kMaxMembers * kMaxProfileBytes / 64));
  auto channel = grpc::CreateCustomChannel(*target, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout))) {
    return absl::UnavailableError(
        absl::StrCat("etcd at ", endpoints, ": no answer within ", absl::FormatDuration(timeout)));
  }
  return std::unique_ptr<EtcdPool>(new EtcdPool(std::move(channel), pool, timeout));
}

EtcdPool::~EtcdPool() { (void)Leave(); }

absl::StatusOr<int64_t> EtcdPool::GrantAndPut() {
  auto lease_stub = etcdserverpb::Lease::NewStub(channel_);
  etcdserverpb::LeaseGrantRequest grant;
  grant.set_ttl(absl::ToInt64Seconds(ttl_));
  etcdserverpb::LeaseGrantResponse granted;
  grpc::Status s = lease_stub->LeaseGrant(Context(timeout_).get(), grant, &granted);
  if (!s.ok()) return FromGrpc(s, "LeaseGrant");
  if (!granted.error().empty()) return absl::UnavailableError("etcd LeaseGrant: " + granted.error());
  etcdserverpb::PutRequest put;
  put.set_key(Prefix(pool_) + host_);
  put.set_value(profile_json_);
  put.set_lease(granted.id());
  etcdserverpb::PutResponse done;
  s = etcdserverpb::KV::NewStub(channel_)->Put(Context(timeout_).get(), put, &done);
  if (!s.ok()) return FromGrpc(s, "Put");
  return granted.id();
}

absl::Status EtcdPool::Join(const std::string& host, const std::string& profile_json,
                            absl::Duration ttl) {
  if (absl::Status s = ValidateName("host", host); !s.ok()) return s;
  if (profile_json.size() > kMaxProfileBytes) {
    return absl::InvalidArgumentError("CPU profile larger than 4 MiB");
  }
  if (ttl < absl::Seconds(2)) return absl::InvalidArgumentError("pool lease TTL below 2 s");
  if (keeper_.joinable()) return absl::FailedPreconditionError("already joined");
  host_ = host;
  profile_json_ = profile_json;
  ttl_ = ttl;
  absl::StatusOr<int64_t> lease = GrantAndPut();
  if (!lease.ok()) return lease.status();
  {
    absl::MutexLock l(&mu_);
    lease_ = *lease;
    stopping_ = false;
  }
  keeper_ = std::thread([this] { KeepAlive(); });
  return absl::OkStatus();
}

// One LeaseKeepAlive exchange; false if the lease is gone or etcd is not
// reachable.
bool EtcdPool::RenewOnce(int64_t lease) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  auto stream = etcdserverpb::Lease::NewStub(channel_)->LeaseKeepAlive(&ctx);
  etcdserverpb::LeaseKeepAliveRequest req;
  req.set_id(lease);
  etcdserverpb::LeaseKeepAliveResponse resp;
  bool ok = stream->Write(req) && stream->Read(&resp) && resp.ttl() > 0;
  stream->WritesDone();
  (void)stream->Finish();
  return ok;
}

void EtcdPool::KeepAlive() {
  absl::MutexLock l(&mu_);
  while (!stopping_) {
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), ttl_ / 3);
    if (stopping_) break;
    int64_t lease = lease_;
    mu_.Unlock();
    bool renewed = RenewOnce(lease);
    absl::StatusOr<int64_t> again = lease;
    if (!renewed) again = GrantAndPut();  // expired (or etcd was away): join again
    mu_.Lock();
    if (!again.ok()) {
      std::fprintf(stderr, "kindling: pool %s: cannot renew this host's entry: %s\n",
                   pool_.c_str(), std::string(again.status().message()).c_str());
    } else {
      lease_ = *again;
    }
  }
}

void EtcdPool::StopKeepAlive() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  if (keeper_.joinable()) keeper_.join();
}

void EtcdPool::Abandon() { StopKeepAlive(); }

absl::Status EtcdPool::Leave() {
  bool joined = keeper_.joinable();
  StopKeepAlive();
  if (!joined) return absl::OkStatus();
  int64_t lease;
  {
    absl::MutexLock l(&mu_);
    lease = lease_;
    lease_ = 0;
  }
  etcdserverpb::LeaseRevokeRequest req;
  req.set_id(lease);
  etcdserverpb::LeaseRevokeResponse resp;
  grpc::Status s =
      etcdserverpb::Lease::NewStub(channel_)->LeaseRevoke(Context(timeout_).get(), req, &resp);
  return s.ok() ? absl::OkStatus() : FromGrpc(s, "LeaseRevoke");
}

absl::StatusOr<std::vector<EtcdPool::Member>> EtcdPool::Members() const {
  std::string prefix = Prefix(pool_);
  etcdserverpb::RangeRequest req;
  req.set_key(prefix);
  req.set_range_end(RangeEnd(prefix));
  req.set_limit(kMaxMembers + 1);
  etcdserverpb::RangeResponse resp;
  grpc::Status s = etcdserverpb::KV::NewStub(channel_)->Range(Context(timeout_).get(), req, &resp);
  if (!s.ok()) return FromGrpc(s, "Range");
  if (static_cast<size_t>(resp.kvs_size()) > kMaxMembers) {
    return absl::FailedPreconditionError(
        absl::StrCat("pool ", pool_, " has more than ", kMaxMembers, " hosts"));
  }
  std::vector<Member> out;
  for (const mvccpb::KeyValue& kv : resp.kvs()) {
    std::string host = kv.key().substr(prefix.size());
    if (!ValidateName("host", host).ok() || kv.value().size() > kMaxProfileBytes) {
      return absl::DataLossError(absl::StrCat("pool ", pool_, ": a malformed entry under ",
                                              prefix, " (key of ", kv.key().size(), " bytes)"));
    }
    out.push_back({std::move(host), kv.value()});
  }
  return out;
}

}  // namespace kindling::control
