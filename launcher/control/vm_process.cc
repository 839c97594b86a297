#include "launcher/control/vm_process.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <deque>
#include <fstream>
#include <memory>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "launcher/cli.h"
#include "launcher/control/socket.h"
#include "launcher/control/wire.h"
#include "launcher/microvm.h"
#include "migration/address.h"
#include "migration/precopy.h"
#include "vcpu/cpu_template.h"
#include "virtio/gpu_png.h"
#include "kindling/status_macros.h"

namespace kindling::control {
namespace {

using vcpu::VcpuRunner;

constexpr size_t kConsoleRing = 64 * 1024;
constexpr int kSendTimeoutMs = 2000;
constexpr int kKilledStatus = 137;

struct Conn {
  explicit Conn(UniqueFd f) : fd(std::move(f)) { SetSendTimeout(fd.get(), kSendTimeoutMs); }
  UniqueFd fd;
  absl::Mutex send_mu;
  bool broken = false;
  void Send(const Message& m) {
    absl::MutexLock l(&send_mu);
    if (!broken && !SendPacket(fd.get(), Encode(m)).ok()) {
      broken = true;
      ::shutdown(fd.get(), SHUT_RDWR);  // its reader thread sees EOF
    }
  }
};

class VmProcess {
 public:
  absl::Status Init(const std::string& dir, RunOptions opts);
  absl::Status InitIncoming(const std::string& dir, RunOptions opts);
  [[noreturn]] void Serve();

 private:
  void OnConsole(uint8_t b);
  void Publish(Message m, std::shared_ptr<Conn> only = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(out_mu_);
  void SetState(control::VmState st, int code, std::string detail)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SenderLoop();
  void ReadLoop(std::shared_ptr<Conn> c);
  // Handles `m` under mu_ and replies to `c`.
  void Execute(const std::shared_ptr<Conn>& c, const Message& m);
  void ReplyTo(const std::shared_ptr<Conn>& c, uint32_t seq, const absl::Status& s);
  // kMigrate runs on its own thread, so that the connection's next
  // commands are read meanwhile: kMigrateSet changes it, kKill cancels it
  // first, the rest are refused until it ends.
  void StartMigration(const std::shared_ptr<Conn>& c, const Message& m);
  absl::Status MigrateSet(std::string_view payload);
  void CancelMigration();
  absl::Status Handle(const Message& m, std::string& body) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Snapshot(const control::SnapshotRequest& req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Migrate(const control::MigrateRequest& req) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Screenshot(const std::string& name, std::string& body)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Start() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Kill() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunVm();
  // An incoming migration (`--incoming ADDR`): waits for the source on
  // `migration_listener_`, builds the VM from its stream and runs it.
  void ReceiveVm(RunOptions opts);
  [[noreturn]] void Quit(const std::shared_ptr<Conn>& c, uint32_t seq);

  std::string dir_;  // --dir: control.sock, pid, screenshots
  UniqueFd listener_;
  UniqueFd migration_listener_;  // --incoming: until the source connected
  UniqueFd migration_conn_ ABSL_GUARDED_BY(mu_);  // a dup of the source's stream
  std::atomic<bool> killed_{false};  // while INCOMING
  std::atomic<bool> migrating_{false};  // a kMigrate is being handled
  absl::Mutex control_mu_;              // not held with mu_
  std::shared_ptr<::migration::MigrationControl> control_ ABSL_GUARDED_BY(control_mu_);
  absl::Mutex mu_;  // lifecycle; taken before out_mu_
  std::unique_ptr<MicroVm> vm_ ABSL_GUARDED_BY(mu_);
  StateEvent state_ ABSL_GUARDED_BY(mu_);
  Counters final_stats_ ABSL_GUARDED_BY(mu_);
  std::thread run_thread_;
  absl::Mutex out_mu_;  // what goes to the connections
  // Events for every connection, and replies for one (`only`), in the
  // order they happened: a reply never overtakes the state change its
  // command caused.
  struct Outgoing {
    Message m;
    std::shared_ptr<Conn> only;
  };
  std::deque<Outgoing> outbox_ ABSL_GUARDED_BY(out_mu_);
  std::string ring_ ABSL_GUARDED_BY(out_mu_);  // console bytes already sent
  StateEvent published_ ABSL_GUARDED_BY(out_mu_);
  std::vector<std::shared_ptr<Conn>> conns_ ABSL_GUARDED_BY(out_mu_);
};

void VmProcess::OnConsole(uint8_t b) {
  absl::MutexLock l(&out_mu_);
  if (!outbox_.empty() && outbox_.back().m.type == Type::kConsoleOutput &&
      outbox_.back().m.payload.size() < kMaxPayload) {
    outbox_.back().m.payload.push_back(static_cast<char>(b));
  } else {
    outbox_.push_back({{Type::kConsoleOutput, 0, std::string(1, static_cast<char>(b))}, nullptr});
  }
}

void VmProcess::Publish(Message m, std::shared_ptr<Conn> only) {
  outbox_.push_back({std::move(m), std::move(only)});
}

void VmProcess::SetState(control::VmState st, int code, std::string detail) {
  state_ = {st, code, std::move(detail)};
  absl::MutexLock l(&out_mu_);
  Publish({Type::kState, 0, EncodeState(state_)});
}

// The one thread that sends events, in the order they happened. What it
// takes from the outbox enters ring_/published_ at the same moment, so a
// connection that arrives later gets it by replay, never twice.
void VmProcess::SenderLoop() {
  for (;;) {
    std::deque<Outgoing> batch;
    std::vector<std::shared_ptr<Conn>> conns;
    {
      absl::MutexLock l(&out_mu_);
      out_mu_.Await(absl::Condition(
          +[](std::deque<Outgoing>* q) { return !q->empty(); }, &outbox_));
      batch.swap(outbox_);
      for (const Outgoing& o : batch) {
        const Message& m = o.m;
        if (m.type == Type::kConsoleOutput) {
          ring_ += m.payload;
          if (ring_.size() > kConsoleRing) ring_.erase(0, ring_.size() - kConsoleRing);
        } else if (m.type == Type::kState) {
          published_ = *DecodeState(m.payload);
        }
      }
      conns = conns_;
    }
    for (const Outgoing& o : batch) {
      if (o.only) {
        o.only->Send(o.m);
        continue;
      }
      for (const auto& c : conns) c->Send(o.m);
    }
  }
}

absl::Status VmProcess::Start() {
  if (state_.state == control::VmState::kIncoming) {
    return absl::FailedPreconditionError(
        "the VM is waiting for an incoming migration; it runs when the source hands over");
  }
  if (state_.state != control::VmState::kCreated) {
    return absl::FailedPreconditionError("the VM has already been started");
  }
  SetState(control::VmState::kRunning, 0, "");
  run_thread_ = std::thread(&VmProcess::RunVm, this);
  return absl::OkStatus();
}

absl::Status VmProcess::Kill() {
  if (state_.state == control::VmState::kIncoming) {
    // Whatever the receiving thread is doing (waiting, reading the stream)
    // fails now; the state says why first.
    SetState(control::VmState::kStopped, kKilledStatus,
             "killed through the API while waiting for a migration");
    killed_.store(true);
    if (migration_listener_.valid()) ::shutdown(migration_listener_.get(), SHUT_RDWR);
    if (migration_conn_.valid()) ::shutdown(migration_conn_.get(), SHUT_RDWR);
    return absl::OkStatus();
  }
  bool live = state_.state == control::VmState::kRunning ||
              state_.state == control::VmState::kPaused;
  if (!live) return absl::FailedPreconditionError("the VM is not running");
  vm_->Stop({VcpuRunner::StopReason::kRequested, kKilledStatus, "killed through the API"});
  if (state_.state == control::VmState::kPaused) vm_->Resume();
  return absl::OkStatus();
}

void VmProcess::ReceiveVm(RunOptions opts) {
  ::migration::AcceptOptions o;
  o.deadline = absl::Now() + absl::Hours(24);
  o.stop = [this] { return killed_.load(); };
  o.ignored = [](const absl::Status& why) {
    std::fprintf(stderr, "kindling vm-process: ignoring a connection that is not a migration "
                 "source: %s\n", std::string(why.message()).c_str());
  };
  absl::StatusOr<::migration::IncomingSource> source =
      ::migration::AcceptSource(migration_listener_.get(), o);
  {
    absl::MutexLock l(&mu_);
    if (state_.state != control::VmState::kIncoming) return;  // killed: refuse the source
    // A dup to shut down if a kill comes while the stream is read: the
    // source then fails before it hands over, and its guest runs on.
    if (source.ok()) migration_conn_ = UniqueFd(::fcntl(source->conn.get(), F_DUPFD_CLOEXEC, 0));
  }
  absl::StatusOr<std::unique_ptr<MicroVm>> vm =
      source.ok() ? MicroVm::Incoming(opts.vm, *std::move(source)) : source.status();
  absl::MutexLock l(&mu_);
  migration_listener_.reset();
  migration_conn_.reset();
  if (state_.state != control::VmState::kIncoming) return;  // killed meanwhile
  if (!vm.ok()) {
    std::fprintf(stderr, "kindling vm-process: incoming migration failed: %s\n",
                 std::string(vm.status().message()).c_str());
    SetState(control::VmState::kFailed, 1,
             absl::StrCat("incoming migration failed: ", vm.status().ToString()));
    return;
  }
  vm_ = *std::move(vm);
  std::fprintf(stderr, "kindling vm-process: incoming migration received; running\n");
  SetState(control::VmState::kRunning, 0, "");
  run_thread_ = std::thread(&VmProcess::RunVm, this);
}

void VmProcess::RunVm() {
  MicroVm* vm;
  {
    absl::MutexLock l(&mu_);
    vm = vm_.get();
  }
  VcpuRunner::Outcome out = vm->Run();
  auto stats = vm->ReadStats();
  std::unique_ptr<MicroVm> dead;
  {
    absl::MutexLock l(&mu_);
    if (stats.ok()) final_stats_ = Counters(stats->begin(), stats->end());
    SetState(control::VmState::kStopped, ExitStatusOf(out), out.detail);
    dead = std::move(vm_);
  }
  dead.reset();  // guest RAM goes back to the host now; the console stays
}

absl::Status VmProcess::Handle(const Message& m, std::string& body) {
  bool live = state_.state == control::VmState::kRunning ||
              state_.state == control::VmState::kPaused;
  switch (m.type) {
    case Type::kStart:
      RETURN_IF_ERROR(Start());
      break;
    case Type::kPause:
    case Type::kResume: {
      bool pause = m.type == Type::kPause;
      auto want = pause ? control::VmState::kRunning : control::VmState::kPaused;
      if (state_.state != want) {
        return absl::FailedPreconditionError(
            pause ? "only a running VM can be paused" : "only a paused VM can be resumed");
      }
      pause ? vm_->Pause() : vm_->Resume();
      SetState(pause ? control::VmState::kPaused : control::VmState::kRunning, 0, "");
      break;
    }
    case Type::kKill:
      return Kill();
    case Type::kPowerButton:
      if (state_.state != control::VmState::kRunning) {
        return absl::FailedPreconditionError(
            "only a running VM can be shut down (a paused guest cannot see the power button)");
      }
      vm_->PressPowerButton();
      break;
    case Type::kSnapshot: {
      ASSIGN_OR_RETURN(control::SnapshotRequest req, DecodeSnapshotRequest(m.payload));
      if (!live) return absl::FailedPreconditionError("only a running or paused VM can be saved");
      return Snapshot(req);
    }
    case Type::kMigrate: {
      ASSIGN_OR_RETURN(control::MigrateRequest req, DecodeMigrateRequest(m.payload));
      if (state_.state != control::VmState::kRunning) {
        return absl::FailedPreconditionError("only a running VM can be migrated");
      }
      return Migrate(req);
    }
    case Type::kScreenshot:
      if (!live) return absl::FailedPreconditionError("only a running or paused VM has a screen");
      return Screenshot(m.payload, body);
    case Type::kConsoleInput:
      if (!vm_) return absl::FailedPreconditionError("the VM is not running");
      vm_->SendConsoleInput(m.payload);
      break;
    case Type::kGetStats: {
      if (!vm_) {  // stopped: what the vCPUs counted until then
        body = EncodeCounters(final_stats_);
        return absl::OkStatus();
      }
      ASSIGN_OR_RETURN(auto stats, vm_->ReadStats());
      body = EncodeCounters(Counters(stats.begin(), stats.end()));
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError("not a command");
  }
  return absl::OkStatus();
}

// Pauses the guest if it runs, saves it, and lets it run on unless asked
// to stay paused (or the save failed: then it runs on as before).
absl::Status VmProcess::Snapshot(const control::SnapshotRequest& req) {
  bool was_running = state_.state == control::VmState::kRunning;
  absl::Time start = absl::Now();
  if (was_running) {
    vm_->Pause();
    SetState(control::VmState::kPaused, 0, "");
  }
  absl::Status s = vm_->SaveSnapshot(req.directory, req.diff);
  absl::Duration saved = absl::Now() - start;
  if (was_running && (!s.ok() || !req.stay_paused)) {
    vm_->Resume();
    SetState(control::VmState::kRunning, 0, "");
  }
  // In vm.log: what a snapshot cost, for operators and bench/snapshot.
  std::fprintf(stderr, "kindling vm-process: %s snapshot to %s %s in %lld us\n",
               req.diff ? "diff" : "full", req.directory.c_str(), s.ok() ? "written" : "failed",
               static_cast<long long>(absl::ToInt64Microseconds(saved)));
  return s;
}

// Writes what the GPU's scanout shows to DIR/NAME (whole or not at all: a
// rename) for the daemon, which reads it after the reply; the reply says
// its size.
absl::Status VmProcess::Screenshot(const std::string& name, std::string& body) {
  RETURN_IF_ERROR(CheckScreenshotName(name));
  ASSIGN_OR_RETURN(virtio::GpuImage image, vm_->Screenshot(0));
  ASSIGN_OR_RETURN(std::string png, virtio::EncodePng(image));
  const std::string path = dir_ + "/" + name, tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(png.data(), static_cast<std::streamsize>(png.size()));
    if (!f.flush()) return absl::InternalError(absl::StrCat("writing ", tmp, " failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("rename to ", path));
  }
  body = EncodeCounters({{"width", image.width}, {"height", image.height}, {"bytes", png.size()}});
  return absl::OkStatus();
}

// Sends the running guest to `req.destination`, on the thread
// StartMigration made; it holds mu_ throughout, and control_ changes it
// meanwhile. Progress goes out as events. Once the destination took over,
// the guest stops here ("migrated"); any failure before (a cancel too)
// leaves it running.
absl::Status VmProcess::Migrate(const control::MigrateRequest& req) {
  ::migration::MigrationOptions o;
  o.mode = req.mode == 2   ? ::migration::MigrationMode::kPostcopy
           : req.mode == 1 ? ::migration::MigrationMode::kAutoConverge
                           : ::migration::MigrationMode::kPrecopy;
  o.max_downtime = absl::Milliseconds(req.max_downtime_ms);
  o.bandwidth_bytes_per_s = uint64_t{req.bandwidth_mibps} << 20;
  o.postcopy_after_rounds = req.postcopy_after_rounds;
  std::shared_ptr<::migration::MigrationControl> control;
  {
    absl::MutexLock l(&control_mu_);
    control = control_;
  }
  o.control = control.get();
  ASSIGN_OR_RETURN(vm_memory::UniqueFd fd,
                   ::migration::Connect(req.destination, absl::Seconds(10)));
  absl::Time start = absl::Now();
  absl::Status s = vm_->MigrateTo(fd.get(), o, [this](const ::migration::MigrationProgress& p) {
    Counters c = {{"round", p.round},
                  {"pages_sent", p.pages_sent},
                  {"bytes_sent", p.bytes_sent},
                  {"dirty_pages", p.dirty_pages},
                  {"rate_bytes_per_s", p.rate_bytes_per_s},
                  {"throttle_percent", static_cast<uint64_t>(p.throttle_percent)},
                  {"downtime_us", static_cast<uint64_t>(absl::ToInt64Microseconds(p.downtime))},
                  {"postcopy_requests", p.postcopy_requests},
                  {"postcopy_left", p.postcopy_left},
                  {p.phase, 1}};
    absl::MutexLock l(&out_mu_);
    Publish({Type::kMigrationProgress, 0, EncodeCounters(c)});
  });
  std::fprintf(stderr, "kindling vm-process: migration to %s %s in %lld ms%s%s\n",
               req.destination.c_str(), s.ok() ? "done" : "failed",
               static_cast<long long>(absl::ToInt64Milliseconds(absl::Now() - start)),
               s.ok() ? "" : ": ", s.ok() ? "" : std::string(s.message()).c_str());
  // A post-copy that failed after the switch-over left the guest stopped.
  if (::migration::SourceStranded(s)) SetState(control::VmState::kPaused, 0, "");
  return s;
}

void VmProcess::Quit(const std::shared_ptr<Conn>& c, uint32_t seq) {
  {
    absl::MutexLock l(&mu_);
    if (vm_) vm_->Stop({VcpuRunner::StopReason::kRequested, kKilledStatus, "VM deleted"});
    if (vm_ && state_.state == control::VmState::kPaused) vm_->Resume();
  }
  if (run_thread_.joinable()) run_thread_.join();
  c->Send({Type::kReply, seq, EncodeReply(absl::OkStatus())});
  ::_exit(0);
}

void VmProcess::ReadLoop(std::shared_ptr<Conn> c) {
  std::string pkt;
  for (;;) {
    absl::StatusOr<bool> open = RecvPacket(c->fd.get(), pkt);
    if (!open.ok() || !*open) break;
    absl::StatusOr<Message> m = Decode(pkt);
    if (!m.ok() || !IsCommand(m->type)) {
      std::fprintf(stderr, "kindling vm-process: dropping a connection: %s\n",
                   m.ok() ? "an event where a command belongs"
                          : std::string(m.status().message()).c_str());
      break;
    }
    if (m->type == Type::kQuit || m->type == Type::kKill) CancelMigration();
    if (m->type == Type::kQuit) Quit(c, m->seq);
    if (m->type == Type::kMigrateSet) {
      ReplyTo(c, m->seq, MigrateSet(m->payload));
    } else if (m->type == Type::kMigrate && !migrating_.exchange(true)) {
      StartMigration(c, *m);
    } else if (migrating_ && m->type != Type::kKill) {
      ReplyTo(c, m->seq, absl::FailedPreconditionError(
                             "the VM is being migrated: until that ends only a change to the "
                             "migration (migrate-set) or a kill is answered"));
    } else {
      Execute(c, *m);
    }
  }
  absl::MutexLock l(&out_mu_);
  std::erase(conns_, c);
}

void VmProcess::Execute(const std::shared_ptr<Conn>& c, const Message& m) {
  std::string body;
  absl::MutexLock l(&mu_);
  absl::Status s = Handle(m, body);
  absl::MutexLock o(&out_mu_);
  Publish({Type::kReply, m.seq, EncodeReply(s, body)}, c);
}

void VmProcess::ReplyTo(const std::shared_ptr<Conn>& c, uint32_t seq, const absl::Status& s) {
  absl::MutexLock o(&out_mu_);
  Publish({Type::kReply, seq, EncodeReply(s)}, c);
}

void VmProcess::StartMigration(const std::shared_ptr<Conn>& c, const Message& m) {
  {
    absl::MutexLock l(&control_mu_);
    control_ = std::make_shared<::migration::MigrationControl>();
  }
  std::thread([this, c, m] {
    Execute(c, m);
    {
      absl::MutexLock l(&control_mu_);
      control_.reset();
    }
    migrating_ = false;
  }).detach();
}

// A kill or a delete does not wait for a migration that can still be
// called off (one past a post-copy's switch-over runs to its end).
void VmProcess::CancelMigration() {
  absl::MutexLock l(&control_mu_);
  if (control_) (void)control_->Cancel();
}

// Setters first, then an early post-copy, then a cancel (which wins).
absl::Status VmProcess::MigrateSet(std::string_view payload) {
  ASSIGN_OR_RETURN(MigrateSetRequest req, DecodeMigrateSetRequest(payload));
  std::shared_ptr<::migration::MigrationControl> control;
  {
    absl::MutexLock l(&control_mu_);
    control = control_;
  }
  if (!control) return absl::FailedPreconditionError("no migration is running");
  if (req.bandwidth_mibps) control->SetBandwidth(uint64_t{*req.bandwidth_mibps} << 20);
  if (req.max_downtime_ms) control->SetMaxDowntime(absl::Milliseconds(*req.max_downtime_ms));
  if (req.start_postcopy) RETURN_IF_ERROR(control->StartPostcopy());
  if (req.cancel) return control->Cancel();
  return absl::OkStatus();
}

void VmProcess::Serve() {
  std::thread(&VmProcess::SenderLoop, this).detach();
  for (;;) {
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    auto c = std::make_shared<Conn>(UniqueFd(fd));
    {
      // Under out_mu_ the sender cannot take anything new: the state and
      // console replayed here are exactly what was sent before.
      absl::MutexLock l(&out_mu_);
      c->Send({Type::kState, 0, EncodeState(published_)});
      for (size_t off = 0; off < ring_.size(); off += kMaxPayload) {
        c->Send({Type::kConsoleReplay, 0, ring_.substr(off, kMaxPayload)});
      }
      conns_.push_back(c);
    }
    std::thread(&VmProcess::ReadLoop, this, c).detach();
  }
}

absl::Status VmProcess::Init(const std::string& dir, RunOptions opts) {
  dir_ = dir;
  opts.vm.collect_stats = true;
  opts.vm.console_output = [this](uint8_t b) { OnConsole(b); };
  opts.vm.on_device_failure = [this](std::string_view device, std::string_view why) {
    std::fprintf(stderr, "kindling vm-process: %.*s needs reset: %.*s\n",
                 static_cast<int>(device.size()), device.data(), static_cast<int>(why.size()),
                 why.data());
    absl::MutexLock l(&out_mu_);
    Publish({Type::kDeviceNeedsReset, 0,
             EncodeDeviceReset({std::string(device), std::string(why)})});
  };
  opts.vm.on_balloon_stats = [this](const std::vector<virtio::BalloonStat>& stats) {
    Counters c;
    for (const virtio::BalloonStat& s : stats) c.emplace_back(virtio::BalloonStatName(s.tag), s.val);
    absl::MutexLock l(&out_mu_);
    Publish({Type::kBalloonStats, 0, EncodeCounters(c)});
  };
  ASSIGN_OR_RETURN(listener_, ListenSeqpacket(dir + "/control.sock"));
  if (!opts.incoming.empty()) return InitIncoming(dir, std::move(opts));
  ASSIGN_OR_RETURN(auto vm, opts.restore_dir.empty()
                                ? MicroVm::Create(opts.vm)
                                : MicroVm::Restore(opts.vm, opts.restore_dir, opts.restore_mode));
  absl::MutexLock l(&mu_);
  vm_ = std::move(vm);
  state_ = {control::VmState::kCreated, 0, ""};
  absl::MutexLock o(&out_mu_);
  published_ = state_;
  std::ofstream(dir + "/pid") << ::getpid() << "\n";
  return absl::OkStatus();
}

// Ready once the migration address listens: the source may connect as
// soon as ReceiveMigration returned.
absl::Status VmProcess::InitIncoming(const std::string& dir, RunOptions opts) {
  dir_ = dir;
  if (!opts.vm.host_cpu_template.empty()) {  // before a source is kept waiting
    RETURN_IF_ERROR(vcpu::LoadCpuTemplateFile(opts.vm.host_cpu_template).status());
  }
  ASSIGN_OR_RETURN(migration_listener_, ::migration::Listen(opts.incoming));
  {
    absl::MutexLock l(&mu_);
    state_ = {control::VmState::kIncoming, 0, absl::StrCat("waiting on ", opts.incoming)};
    absl::MutexLock o(&out_mu_);
    published_ = state_;
  }
  std::ofstream(dir + "/pid") << ::getpid() << "\n";
  std::thread(&VmProcess::ReceiveVm, this, std::move(opts)).detach();
  return absl::OkStatus();
}

void Report(int fd, const std::string& text) {
  if (fd < 0) return;
  (void)!::write(fd, text.data(), text.size());
  ::close(fd);
}

}  // namespace

int VmProcessMain(const std::vector<std::string>& args) {
  std::string dir;
  int ready_fd = -1;
  size_t i = 0;
  for (; i < args.size() && args[i] != "--"; ++i) {
    if (args[i] == "--dir" && i + 1 < args.size()) {
      dir = args[++i];
    } else if (args[i] == "--ready-fd" && i + 1 < args.size() &&
               absl::SimpleAtoi(args[i + 1], &ready_fd)) {
      ++i;
    } else {
      std::fprintf(stderr, "kindling vm-process: unexpected '%s'\n", args[i].c_str());
      return 2;
    }
  }
  auto opts = ParseRunFlags({args.begin() + std::min(i + 1, args.size()), args.end()});
  if (dir.empty() || !opts.ok()) {
    std::string why = dir.empty() ? "--dir is required" : std::string(opts.status().message());
    Report(ready_fd, absl::StrCat("error ", static_cast<int>(absl::StatusCode::kInvalidArgument),
                                  " ", why));
    std::fprintf(stderr, "kindling vm-process: %s\n", why.c_str());
    return 2;
  }
  static VmProcess* process = new VmProcess();  // lives until _exit
  absl::Status s = process->Init(dir, *std::move(opts));
  if (!s.ok()) {
    Report(ready_fd, absl::StrCat("error ", static_cast<int>(s.code()), " ", s.message()));
    std::fprintf(stderr, "kindling vm-process: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  Report(ready_fd, "ok");
  process->Serve();
}

}  // namespace kindling::control
