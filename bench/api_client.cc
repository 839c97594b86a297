// bench/api_client: the client half of bench/api in C++, so that what is
// timed is the daemon and not a Python client. For each run: CreateVm,
// AttachConsole, StartVm, first console byte, end of the console stream
// (the guest stopped), DeleteVm. Prints one line per run:
//   run N create_us A start_us B first_us C end_us D
// With --parallel P, P threads do --runs cycles between them and the last
// line is `throughput V vms_per_s`.
//
//   api_client SOCKET KERNEL RUNS [PARALLEL]
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "kindling/v1/vm.grpc.pb.h"

namespace v1 = kindling::v1;
using Clock = std::chrono::steady_clock;

namespace {

long Us(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::microseconds>(b - a).count();
}

bool Cycle(v1::VmService::Stub& stub, const std::string& kernel, const std::string& id,
           bool print, int n) {
  v1::CreateVmRequest req;
  req.set_vm_id(id);
  v1::VmConfig* c = req.mutable_config();
  c->set_kernel(kernel);
  c->set_vcpus(1);
  c->set_memory_mib(128);
  c->set_irqchip(v1::IRQCHIP_SPLIT);
  c->set_console(v1::CONSOLE_SERIAL);
  c->set_transport(v1::TRANSPORT_MMIO);
  c->set_virtqueue(v1::VIRTQUEUE_SPLIT);
  auto t0 = Clock::now();
  v1::Vm vm;
  grpc::ClientContext cctx;
  if (!stub.CreateVm(&cctx, req, &vm).ok()) return false;
  auto t1 = Clock::now();
  grpc::ClientContext actx;
  auto stream = stub.AttachConsole(&actx);
  v1::ConsoleInput first;
  first.set_vm_id(id);
  stream->Write(first);
  stream->WritesDone();
  v1::VmRef ref;
  ref.set_vm_id(id);
  grpc::ClientContext sctx;
  if (!stub.StartVm(&sctx, ref, &vm).ok()) return false;
  auto t2 = Clock::now();
  Clock::time_point t3{};
  v1::ConsoleOutput out;
  while (stream->Read(&out)) {
    if (t3 == Clock::time_point{} && !out.data().empty()) t3 = Clock::now();
  }
  stream->Finish();
  auto t4 = Clock::now();
  grpc::ClientContext dctx;
  if (!stub.DeleteVm(&dctx, ref, &vm).ok()) return false;
  if (print) {
    std::printf("run %d create_us %ld start_us %ld first_us %ld end_us %ld\n", n, Us(t0, t1),
                Us(t0, t2), Us(t0, t3), Us(t0, t4));
  }
  return t3 != Clock::time_point{};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: api_client SOCKET KERNEL RUNS [PARALLEL]\n");
    return 2;
  }
  auto ch = grpc::CreateChannel(std::string("unix:") + argv[1], grpc::InsecureChannelCredentials());
  auto stub = v1::VmService::NewStub(ch);
  int runs = std::atoi(argv[3]);
  int parallel = argc > 4 ? std::atoi(argv[4]) : 0;
  if (parallel == 0) {
    for (int i = 0; i < runs; ++i) {
      if (!Cycle(*stub, argv[2], "bench-" + std::to_string(i), true, i)) return 1;
    }
    return 0;
  }
  std::atomic<int> next = 0, failed = 0;
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < parallel; ++t) {
    threads.emplace_back([&] {
      for (int i; (i = next++) < runs;) {
        if (!Cycle(*stub, argv[2], "par-" + std::to_string(i), false, i)) failed++;
      }
    });
  }
  for (auto& t : threads) t.join();
  std::printf("throughput %.1f vms_per_s failed %d\n", runs / (Us(t0, Clock::now()) / 1e6),
              failed.load());
  return failed ? 1 : 0;
}
