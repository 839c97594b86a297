// The daemon's side of one VM process: spawns it (or reconnects to one a
// previous daemon started), sends it commands, and turns what it sends
// back into kindling.v1 state, events and console bytes.
//
//   ASSIGN_OR_RETURN(auto vm, VmHandle::Spawn(args, &hub));
//   ASSIGN_OR_RETURN(control::Reply r, vm->Call(control::Type::kStart));
//   v1::Vm now = vm->Snapshot();
#ifndef KINDLING_LAUNCHER_CONTROL_VM_HANDLE_H_
#define KINDLING_LAUNCHER_CONTROL_VM_HANDLE_H_

#include <sys/types.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kindling/v1/vm.pb.h"
#include "launcher/control/socket.h"
#include "launcher/control/wire.h"

namespace kindling::control {

// Fans events out to every WatchEvents stream.
class EventHub {
 public:
  struct Subscription {
    std::string vm_id;  // empty: all VMs
    absl::Mutex mu;
    std::deque<v1::Event> queue ABSL_GUARDED_BY(mu);
  };
  std::shared_ptr<Subscription> Subscribe(const std::string& vm_id);
  void Unsubscribe(const std::shared_ptr<Subscription>& s);
  void Publish(v1::Event e);

 private:
  absl::Mutex mu_;
  std::set<std::shared_ptr<Subscription>> subs_ ABSL_GUARDED_BY(mu_);
};

// Console bytes for one AttachConsole stream.
struct ConsoleSink {
  absl::Mutex mu;
  std::string data ABSL_GUARDED_BY(mu);
  // The VM stopped or its process went away: nothing more will come.
  bool closed ABSL_GUARDED_BY(mu) = false;
};

// STOPPED or FAILED: the guest no longer runs; only DeleteVm is left.
inline bool IsStopped(v1::VmState s) {
  return s == v1::VM_STATE_STOPPED || s == v1::VM_STATE_FAILED;
}

struct SpawnArgs {
  std::string vm_id;
  std::string dir;         // created by the caller, holds config.pb
  std::string vm_binary;   // the `kindling` program
  std::vector<std::string> run_flags;
  v1::VmConfig config;
  // What the VM process reports once ready (INCOMING for --incoming).
  v1::VmState initial_state = v1::VM_STATE_CREATED;
};

class VmHandle {
 public:
  static absl::StatusOr<std::shared_ptr<VmHandle>> Spawn(const SpawnArgs& a, EventHub* hub);
  // Reconnects to DIR/control.sock; a process that does not answer gives a
  // FAILED VM (the daemon still lists it, so it can be deleted).
  static std::shared_ptr<VmHandle> Attach(const std::string& vm_id, const std::string& dir,
                                          v1::VmConfig config, EventHub* hub);
  ~VmHandle();

  // Sends a command and waits for its reply (or the process's end).
  // Waits up to `timeout` for the reply (a snapshot of a large VM takes
  // longer than the default).
  absl::StatusOr<Reply> Call(Type t, std::string payload = {},
                             absl::Duration timeout = absl::Seconds(10));
  v1::Vm Snapshot();
  // Waits until the state satisfies `done`; false on timeout.
  bool WaitForState(bool (*done)(v1::VmState), absl::Duration timeout);
  // Waits until the VM process's socket has closed (it has exited); false
  // on timeout.
  bool WaitGone(absl::Duration timeout);
  // Registers a console reader; returns what the console printed so far.
  std::string AttachConsole(const std::shared_ptr<ConsoleSink>& sink);
  void DetachConsole(const std::shared_ptr<ConsoleSink>& sink);
  const std::string& dir() const { return dir_; }
  const std::string& id() const { return id_; }

 private:
  VmHandle(std::string id, std::string dir, v1::VmConfig config, EventHub* hub)
      : id_(std::move(id)), dir_(std::move(dir)), config_(std::move(config)), hub_(hub) {}
  void Connect(UniqueFd fd, pid_t pid);
  void ReadLoop();
  void OnState(const StateEvent& s);
  void OnConsole(const std::string& bytes);
  void OnGone(const std::string& why);
  void Emit(v1::Event e);

  const std::string id_;
  const std::string dir_;
  const v1::VmConfig config_;
  EventHub* const hub_;
  UniqueFd fd_;
  bool spawned_ = false;  // our child: waitpid tells how it ended
  std::thread reader_;

  absl::Mutex mu_;
  v1::VmState state_ ABSL_GUARDED_BY(mu_) = v1::VM_STATE_CREATED;
  v1::ExitStatus exit_ ABSL_GUARDED_BY(mu_);
  std::string failure_ ABSL_GUARDED_BY(mu_);
  pid_t pid_ ABSL_GUARDED_BY(mu_) = 0;
  bool gone_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint32_t, std::optional<Reply>> pending_ ABSL_GUARDED_BY(mu_);
  std::string console_ ABSL_GUARDED_BY(mu_);  // the last 64 KiB
  std::set<std::shared_ptr<ConsoleSink>> sinks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kindling::control

#endif  // KINDLING_LAUNCHER_CONTROL_VM_HANDLE_H_
