// VcpuRunner: one thread per vCPU running KVM_RUN in a loop, dispatching
// port I/O and MMIO exits to two Buses, with pause/resume of all vCPUs and
// a single stop decision (the first reason to stop wins).
//
//   VcpuRunner runner(vcpus, pio_bus, mmio_bus);
//   RETURN_IF_ERROR(runner.Start());
//   runner.Pause();   // every vCPU is out of KVM_RUN when this returns
//   runner.Resume();
//   VcpuRunner::Outcome out = runner.Wait();   // after Stop() or a guest exit
//
// Devices stop the VM by calling Stop() (debug-exit, i8042 reset); signal
// handlers may call RequestStopFromSignal().
#ifndef VCPU_VCPU_RUNNER_H_
#define VCPU_VCPU_RUNNER_H_

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "vcpu/bus.h"
#include "vcpu/kvm.h"

namespace vcpu {

class VcpuRunner {
 public:
  enum class StopReason {
    kGuestExit,  // debug-exit port: exit_code is the guest's byte
    kShutdown,   // clean shutdown or reset requested by the guest
    kCrash,      // triple fault, emulation failure, KVM error
    kRequested,  // the VMM (a signal, an API call) asked
  };
  struct Outcome {
    StopReason reason = StopReason::kRequested;
    int exit_code = 0;
    std::string detail;
  };

  // `on_ioapic_eoi` receives split-irqchip EOIs (may be empty).
  VcpuRunner(std::vector<std::unique_ptr<Vcpu>>& vcpus, const Bus& pio,
             const Bus& mmio,
             std::function<void(uint8_t)> on_ioapic_eoi = nullptr);
  ~VcpuRunner();

  absl::Status Start();
  void Pause();
  void Resume();
  // Records the outcome (first call wins) and kicks every vCPU out.
  void Stop(Outcome outcome);
  // Async-signal-safe: asks the runner to stop with kRequested. vCPUs
  // parked by Pause() only notice at the next Resume() or Stop(); prefer
  // Stop() from a signal-waiting thread.
  void RequestStopFromSignal(int signo);
  // Blocks until stopped and every vCPU thread has exited.
  Outcome Wait();
  // Per-vCPU count of exits handled in user space (for tests).
  uint64_t UserExits(size_t index) const;

 private:
  void RunLoop(size_t index);
  // Handles one exit; false when the vCPU must stop.
  bool HandleExit(size_t index, const VcpuExit& exit);
  void KickAll();

  std::vector<std::unique_ptr<Vcpu>>& vcpus_;
  const Bus& pio_;
  const Bus& mmio_;
  std::function<void(uint8_t)> on_ioapic_eoi_;
  std::vector<std::thread> threads_;
  std::vector<pthread_t> handles_;
  // False once Wait() joined the threads: their pthread_t are dead and
  // must not be signalled (a Stop after the run ended, e.g. a destructor).
  std::atomic<bool> kickable_{false};
  std::unique_ptr<std::atomic<uint64_t>[]> user_exits_;

  std::atomic<bool> stopping_{false};
  std::atomic<int> signal_stop_{0};
  absl::Mutex mu_;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  size_t parked_ ABSL_GUARDED_BY(mu_) = 0;
  bool have_outcome_ ABSL_GUARDED_BY(mu_) = false;
  Outcome outcome_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vcpu

#endif  // VCPU_VCPU_RUNNER_H_
