#include "launcher/control/vm_handle.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kindling/status_macros.h"

extern char** environ;

namespace kindling::control {
namespace {

constexpr size_t kConsoleKeep = 64 * 1024;
constexpr int kBuildTimeoutMs = 60'000;

v1::Event NewEvent(const std::string& id) {
  v1::Event e;
  e.set_vm_id(id);
  e.set_time_unix_ns(absl::ToUnixNanos(absl::Now()));
  return e;
}

// The VM process's progress counters as a MigrationProgress event.
v1::Event MigrationEvent(const std::string& id, const Counters& c) {
  v1::Event e = NewEvent(id);
  v1::MigrationProgress* p = e.mutable_migration_progress();
  p->set_phase("precopy");
  for (const auto& [k, v] : c) {
    if (k == "round") p->set_round(static_cast<uint32_t>(v));
    if (k == "pages_sent") p->set_pages_sent(v);
    if (k == "bytes_sent") p->set_bytes_sent(v);
    if (k == "dirty_pages") p->set_dirty_pages(v);
    if (k == "rate_bytes_per_s") p->set_rate_bytes_per_s(v);
    if (k == "throttle_percent") p->set_throttle_percent(static_cast<uint32_t>(std::min<uint64_t>(v, 100)));
    if (k == "downtime_us") p->set_downtime_us(v);
    if (k == "postcopy_requests") p->set_postcopy_requests(v);
    if (k == "postcopy_left") p->set_postcopy_left(v);
    if (k == "postcopy") p->set_phase("postcopy");
    if (k == "done") p->set_phase("done");
  }
  return e;
}

// Everything the child writes to the ready pipe before closing it.
std::string ReadAll(int fd, int timeout_ms) {
  std::string out;
  char buf[512];
  absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
  for (;;) {
    int left = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, left) == 0) return out + "\ntimeout";
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || out.size() > 8192) return out;
    out.append(buf, n);
  }
}

// "error CODE MESSAGE" from the VM process into a status.
absl::Status ReadyError(const std::string& text, const std::string& log) {
  int code = static_cast<int>(absl::StatusCode::kInternal);
  std::string msg = text;
  if (text.rfind("error ", 0) == 0) {
    size_t sp = text.find(' ', 6);
    if (sp != std::string::npos && absl::SimpleAtoi(text.substr(6, sp - 6), &code) &&
        code > 0 && code <= 16) {
      msg = text.substr(sp + 1);
    }
  } else {
    msg = absl::StrCat("the VM process ended before it was ready (", text.empty() ? "no report" : text,
                       "); see ", log);
  }
  return absl::Status(static_cast<absl::StatusCode>(code), msg);
}

std::string DescribeWait(int status) {
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  return absl::StrCat("exited with status ", WEXITSTATUS(status));
}

}  // namespace

std::shared_ptr<EventHub::Subscription> EventHub::Subscribe(const std::string& vm_id) {
  auto s = std::make_shared<Subscription>();
  s->vm_id = vm_id;
  absl::MutexLock l(&mu_);
  subs_.insert(s);
  return s;
}

void EventHub::Unsubscribe(const std::shared_ptr<Subscription>& s) {
  absl::MutexLock l(&mu_);
  subs_.erase(s);
}

void EventHub::Publish(v1::Event e) {
  absl::MutexLock l(&mu_);
  for (const auto& s : subs_) {
    if (!s->vm_id.empty() && s->vm_id != e.vm_id()) continue;
    absl::MutexLock q(&s->mu);
    if (s->queue.size() < 4096) s->queue.push_back(e);  // a stuck reader loses events, not memory
  }
}

absl::StatusOr<std::shared_ptr<VmHandle>> VmHandle::Spawn(const SpawnArgs& a, EventHub* hub) {
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
  UniqueFd ready_r(ready[0]), ready_w(ready[1]);
  std::string log = a.dir + "/vm.log";
  std::vector<std::string> words = {"kindling", "vm-process", "--dir", a.dir,
                                    "--ready-fd", "3", "--"};
  words.insert(words.end(), a.run_flags.begin(), a.run_flags.end());
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_adddup2(&fa, ready_w.get(), 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Its own session: a daemon killed with -9 (or its terminal's SIGINT)
  // does not take the VM with it.
  // and the daemon's blocked SIGINT/SIGTERM and ignored SIGPIPE are not
  // passed on: a VM process starts as `kindling run` would.
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGHUP}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  int err = ::posix_spawn(&pid, a.vm_binary.c_str(), &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (err != 0) return absl::ErrnoToStatus(err, absl::StrCat("starting ", a.vm_binary));
  ready_w.reset();

  std::string report = ReadAll(ready_r.get(), kBuildTimeoutMs);
  if (report != "ok") {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return ReadyError(report, log);
  }
  absl::StatusOr<UniqueFd> fd = ConnectSeqpacket(a.dir + "/control.sock");
  if (!fd.ok()) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return fd.status();
  }
  std::shared_ptr<VmHandle> h(new VmHandle(a.vm_id, a.dir, a.config, hub));
  h->spawned_ = true;
  {
    absl::MutexLock l(&h->mu_);
    h->state_ = a.initial_state;
  }
  h->Connect(*std::move(fd), pid);
  return h;
}

std::shared_ptr<VmHandle> VmHandle::Attach(const std::string& vm_id, const std::string& dir,
                                           v1::VmConfig config, EventHub* hub) {
  std::shared_ptr<VmHandle> h(new VmHandle(vm_id, dir, std::move(config), hub));
  pid_t pid = 0;
  std::ifstream(dir + "/pid") >> pid;
  absl::StatusOr<UniqueFd> fd = ConnectSeqpacket(dir + "/control.sock");
  if (!fd.ok()) {
    absl::MutexLock l(&h->mu_);
    h->gone_ = true;
    h->state_ = v1::VM_STATE_FAILED;
    h->failure_ = absl::StrCat("VM process gone when the daemon started (", fd.status().message(), ")");
    return h;
  }
  h->Connect(*std::move(fd), pid);
  return h;
}

void VmHandle::Connect(UniqueFd fd, pid_t pid) {
  SetSendTimeout(fd.get(), 2000);
  fd_ = std::move(fd);
  {
    absl::MutexLock l(&mu_);
    pid_ = pid;
  }
  reader_ = std::thread(&VmHandle::ReadLoop, this);
}

VmHandle::~VmHandle() {
  if (fd_.valid()) ::shutdown(fd_.get(), SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
}

void VmHandle::ReadLoop() {
  std::string pkt;
  std::string why = "control socket closed";
  for (;;) {
    absl::StatusOr<bool> open = RecvPacket(fd_.get(), pkt);
    if (!open.ok() || !*open) {
      if (!open.ok()) why = std::string(open.status().message());
      break;
    }
    absl::StatusOr<Message> m = Decode(pkt);
    if (!m.ok()) {
      why = absl::StrCat("bad packet from the VM process: ", m.status().message());
      break;
    }
    if (m->type == Type::kReply) {
      absl::StatusOr<Reply> r = DecodeReply(m->payload);
      absl::MutexLock l(&mu_);
      auto it = pending_.find(m->seq);
      if (it != pending_.end()) it->second = r.ok() ? *r : Reply{r.status(), ""};
    } else if (m->type == Type::kState) {
      absl::StatusOr<StateEvent> s = DecodeState(m->payload);
      if (s.ok()) OnState(*s);
    } else if (m->type == Type::kConsoleOutput || m->type == Type::kConsoleReplay) {
      OnConsole(m->payload);
    } else if (m->type == Type::kDeviceNeedsReset) {
      if (absl::StatusOr<DeviceReset> d = DecodeDeviceReset(m->payload); d.ok()) {
        v1::Event e = NewEvent(id_);
        e.mutable_device_needs_reset()->set_device(d->device);
        e.mutable_device_needs_reset()->set_reason(d->reason);
        hub_->Publish(e);
      }
    } else if (m->type == Type::kMigrationProgress) {
      if (absl::StatusOr<Counters> c = DecodeCounters(m->payload); c.ok()) {
        hub_->Publish(MigrationEvent(id_, *c));
      }
    } else if (m->type == Type::kBalloonStats) {
      if (absl::StatusOr<Counters> c = DecodeCounters(m->payload); c.ok()) {
        v1::Event e = NewEvent(id_);
        for (const auto& [k, v] : *c) (*e.mutable_balloon_stats()->mutable_stats())[k] = v;
        hub_->Publish(e);
      }
    }
  }
  OnGone(why);
}

void VmHandle::OnState(const StateEvent& s) {
  v1::VmState to = static_cast<v1::VmState>(s.state);
  v1::VmState from;
  {
    absl::MutexLock l(&mu_);
    from = state_;
    if (from == to) return;
    state_ = to;
    if (IsStopped(to)) {
      exit_.set_code(s.exit_code);
      exit_.set_detail(s.detail);
    }
  }
  if (IsStopped(to)) {
    // Console bytes come before the state change on the VM process's one
    // ordered stream: readers have everything and may end now.
    absl::MutexLock l(&mu_);
    for (const auto& sink : sinks_) {
      absl::MutexLock q(&sink->mu);
      sink->closed = true;
    }
  }
  v1::Event e = NewEvent(id_);
  e.mutable_state_changed()->set_from(from);
  e.mutable_state_changed()->set_to(to);
  hub_->Publish(e);
  if (to == v1::VM_STATE_STOPPED) {
    v1::Event x = NewEvent(id_);
    x.mutable_guest_exited()->mutable_exit_status()->set_code(s.exit_code);
    x.mutable_guest_exited()->mutable_exit_status()->set_detail(s.detail);
    hub_->Publish(x);
  }
}

void VmHandle::OnConsole(const std::string& bytes) {
  absl::MutexLock l(&mu_);
  console_ += bytes;
  if (console_.size() > kConsoleKeep) console_.erase(0, console_.size() - kConsoleKeep);
  for (const auto& s : sinks_) {
    absl::MutexLock q(&s->mu);
    if (s->data.size() < (4u << 20)) s->data += bytes;
  }
}

void VmHandle::OnGone(const std::string& why) {
  std::string detail = why;
  v1::VmState from;
  pid_t pid;
  {
    absl::MutexLock l(&mu_);
    pid = pid_;
  }
  int status = 0;
  if (spawned_ && pid > 0) {
    // The socket closes as the process dies; give waitpid a moment.
    for (int i = 0; i < 200; ++i) {
      pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        detail = DescribeWait(status);
        break;
      }
      if (r < 0) break;
      ::usleep(5000);
    }
  }
  {
    absl::MutexLock l(&mu_);
    gone_ = true;
    pid_ = 0;
    for (auto& [seq, reply] : pending_) {
      if (!reply) reply = Reply{absl::UnavailableError("the VM process went away: " + detail), ""};
    }
    for (const auto& s : sinks_) {
      absl::MutexLock q(&s->mu);
      s->closed = true;
    }
    from = state_;
    if (from == v1::VM_STATE_STOPPED) return;  // its work was done (DeleteVm, or killed later)
    state_ = v1::VM_STATE_FAILED;
    failure_ = "VM process " + detail;
  }
  v1::Event e = NewEvent(id_);
  e.mutable_process_died()->set_detail(detail);
  hub_->Publish(e);
  v1::Event s = NewEvent(id_);
  s.mutable_state_changed()->set_from(from);
  s.mutable_state_changed()->set_to(v1::VM_STATE_FAILED);
  hub_->Publish(s);
}

absl::StatusOr<Reply> VmHandle::Call(Type t, std::string payload, absl::Duration timeout) {
  uint32_t seq;
  {
    absl::MutexLock l(&mu_);
    if (gone_) return absl::FailedPreconditionError(absl::StrCat("VM ", id_, ": its process is gone (", failure_, ")"));
    seq = next_seq_++;
    pending_[seq] = std::nullopt;
  }
  absl::Status sent = SendPacket(fd_.get(), Encode({t, seq, std::move(payload)}));
  std::optional<Reply> r;
  {
    absl::MutexLock l(&mu_);
    auto it = pending_.find(seq);
    if (sent.ok()) {
      mu_.AwaitWithTimeout(
          absl::Condition(+[](std::optional<Reply>* x) { return x->has_value(); }, &it->second),
          timeout);
    }
    r = std::move(it->second);
    pending_.erase(it);
  }
  if (!sent.ok()) return absl::UnavailableError(absl::StrCat("VM ", id_, ": ", sent.message()));
  if (!r) {
    return absl::DeadlineExceededError(
        absl::StrCat("VM ", id_, ": no answer in ", absl::FormatDuration(timeout)));
  }
  // The VM process sends the state change a command caused before the
  // command's reply, on the same stream: the state is current here.
  return *r;
}

v1::Vm VmHandle::Snapshot() {
  absl::MutexLock l(&mu_);
  v1::Vm vm;
  vm.set_vm_id(id_);
  vm.set_state(state_);
  *vm.mutable_config() = config_;
  if (IsStopped(state_)) {
    *vm.mutable_exit_status() = exit_;
  }
  vm.set_pid(pid_);
  vm.set_failure(failure_);
  return vm;
}

bool VmHandle::WaitForState(bool (*done)(v1::VmState), absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  struct Arg {
    bool (*done)(v1::VmState);
    v1::VmState* state;
  } arg{done, &state_};
  return mu_.AwaitWithTimeout(
      absl::Condition(+[](Arg* a) { return a->done(*a->state); }, &arg), timeout);
}

bool VmHandle::WaitGone(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&gone_), timeout);
}

std::string VmHandle::AttachConsole(const std::shared_ptr<ConsoleSink>& sink) {
  absl::MutexLock l(&mu_);
  sinks_.insert(sink);
  if (gone_ || IsStopped(state_)) {
    absl::MutexLock q(&sink->mu);
    sink->closed = true;
  }
  return console_;
}

void VmHandle::DetachConsole(const std::shared_ptr<ConsoleSink>& sink) {
  absl::MutexLock l(&mu_);
  sinks_.erase(sink);
}

}  // namespace kindling::control
