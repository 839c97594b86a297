#include "vcpu/vcpu_runner.h"

#include <signal.h>

#include <cstring>
#include <mutex>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vcpu {
namespace {

// The signal that kicks a vCPU thread out of KVM_RUN. Its handler does
// nothing; delivery alone makes KVM_RUN return EINTR.
int KickSignal() { return SIGRTMIN + 1; }

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sigaction(KickSignal(), &sa, nullptr);  // no SA_RESTART
  });
}

}  // namespace

VcpuRunner::VcpuRunner(std::vector<std::unique_ptr<Vcpu>>& vcpus,
                       const Bus& pio, const Bus& mmio,
                       std::function<void(uint8_t)> on_ioapic_eoi)
    : vcpus_(vcpus),
      pio_(pio),
      mmio_(mmio),
      on_ioapic_eoi_(std::move(on_ioapic_eoi)),
      user_exits_(new std::atomic<uint64_t>[vcpus.size()]) {
  for (size_t i = 0; i < vcpus.size(); ++i) user_exits_[i] = 0;
}

VcpuRunner::~VcpuRunner() {
  if (!threads_.empty()) {
    Stop({StopReason::kRequested, 0, "runner destroyed"});
    Wait();
  }
}

absl::Status VcpuRunner::Start() {
  InstallKickHandler();
  handles_.resize(vcpus_.size());
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    threads_.emplace_back([this, i] { RunLoop(i); });
    handles_[i] = threads_.back().native_handle();
  }
  kickable_ = true;
  return absl::OkStatus();
}

void VcpuRunner::KickAll() {
  for (size_t i = 0; i < vcpus_.size(); ++i) vcpus_[i]->SetImmediateExit(true);
  if (!kickable_.load()) return;
  for (pthread_t t : handles_) pthread_kill(t, KickSignal());
}

void VcpuRunner::Pause() {
  absl::MutexLock lock(&mu_);
  if (paused_) return;
  paused_ = true;
  KickAll();
  auto all_parked = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return parked_ == threads_.size() || stopping_.load();
  };
  // Keep kicking: a vCPU may have been between its check and KVM_RUN.
  while (!mu_.AwaitWithTimeout(absl::Condition(&all_parked),
                               absl::Milliseconds(5))) {
    KickAll();
  }
}

void VcpuRunner::Resume() {
  absl::MutexLock lock(&mu_);
  paused_ = false;
}

void VcpuRunner::Stop(Outcome outcome) {
  {
    absl::MutexLock lock(&mu_);
    if (!have_outcome_) {
      have_outcome_ = true;
      outcome_ = std::move(outcome);
    }
    // Set under mu_ so that vCPUs parked by Pause() re-check and leave.
    stopping_ = true;
  }
  KickAll();
}

void VcpuRunner::RequestStopFromSignal(int signo) {
  // Only atomics and pthread_kill here: we may be inside a signal handler.
  signal_stop_.store(signo);
  stopping_.store(true);
  for (auto& v : vcpus_) v->SetImmediateExit(true);  // an atomic store
  if (!kickable_.load()) return;
  for (pthread_t t : handles_) pthread_kill(t, KickSignal());
}

VcpuRunner::Outcome VcpuRunner::Wait() {
  // Every vCPU is on its way out once it left its loop; after the joins
  // their handles are dead (pthread_kill on one is undefined: seen as a
  // SIGSEGV in a destructor's Stop after the run had ended).
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
  kickable_ = false;
  threads_.clear();
  absl::MutexLock lock(&mu_);
  if (!have_outcome_) {
    have_outcome_ = true;
    int signo = signal_stop_.load();
    outcome_ = {StopReason::kRequested, signo ? 128 + signo : 0,
                signo ? absl::StrCat("stopped by signal ", signo) : "stopped"};
  }
  return outcome_;
}

uint64_t VcpuRunner::UserExits(size_t index) const {
  return user_exits_[index].load();
}

void VcpuRunner::RunLoop(size_t index) {
  Vcpu& vcpu = *vcpus_[index];
  while (!stopping_.load()) {
    {
      absl::MutexLock lock(&mu_);
      if (paused_) {
        // KVM finishes the instruction of an I/O or MMIO exit only on the
        // next KVM_RUN; with immediate_exit it does just that and returns,
        // so a paused vCPU's saved state is after that instruction (else
        // a restored or migrated guest would repeat an OUT, e.g. print a
        // serial byte twice, or lose an IN's value). KVM API, KVM_RUN.
        vcpu.SetImmediateExit(true);
        (void)vcpu.Run();
        ++parked_;
        mu_.Await(absl::Condition(
            +[](VcpuRunner* r) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return !r->paused_ || r->stopping_.load();
            },
            this));
        --parked_;
      }
      vcpu.SetImmediateExit(false);
    }
    if (stopping_.load()) break;
    absl::StatusOr<VcpuExit> exit = vcpu.Run();
    if (!exit.ok()) {
      Stop({StopReason::kCrash, 0,
            absl::StrCat("vCPU ", index, ": ", exit.status().message())});
      break;
    }
    if (std::holds_alternative<Interrupted>(*exit)) continue;
    user_exits_[index].fetch_add(1, std::memory_order_relaxed);
    if (!HandleExit(index, *exit)) break;
  }
}

bool VcpuRunner::HandleExit(size_t index, const VcpuExit& exit) {
  if (auto* e = std::get_if<IoIn>(&exit)) {
    pio_.Read(e->port, e->data);
  } else if (auto* e = std::get_if<IoOut>(&exit)) {
    pio_.Write(e->port, e->data);
  } else if (auto* e = std::get_if<MmioRead>(&exit)) {
    mmio_.Read(e->address, e->data);
  } else if (auto* e = std::get_if<MmioWrite>(&exit)) {
    mmio_.Write(e->address, e->data);
  } else if (auto* e = std::get_if<IoapicEoi>(&exit)) {
    if (on_ioapic_eoi_) on_ioapic_eoi_(e->vector);
  } else if (std::holds_alternative<Halt>(exit)) {
    // Without an in-kernel LAPIC a halted vCPU can never wake up again.
    Stop({StopReason::kShutdown, 0, absl::StrCat("vCPU ", index, " halted")});
    return false;
  } else if (std::holds_alternative<Shutdown>(exit)) {
    Stop({StopReason::kCrash, 0,
          absl::StrCat("vCPU ", index,
                       ": guest triple-faulted (KVM_EXIT_SHUTDOWN)")});
    return false;
  } else if (auto* e = std::get_if<SystemEvent>(&exit)) {
    if (e->type == KVM_SYSTEM_EVENT_CRASH) {
      Stop({StopReason::kCrash, 0, "guest reported a crash"});
    } else {
      Stop({StopReason::kShutdown, 0,
            e->type == KVM_SYSTEM_EVENT_RESET ? "guest reset" : "guest shut down"});
    }
    return false;
  } else if (auto* e = std::get_if<EntryFailure>(&exit)) {
    std::string where;
    if (auto regs = vcpus_[index]->GetRegs(); regs.ok()) {
      where = absl::StrFormat(" at rip 0x%x", regs->rip);
    }
    Stop({StopReason::kCrash, 0,
          absl::StrCat("vCPU ", index, ": ", e->reason, where)});
    return false;
  }
  return true;
}

}  // namespace vcpu
