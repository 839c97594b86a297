// Fuzzes the CPU template JSON parser and its application to a CPUID table.
#include <cstdint>
#include <string_view>

#include "vcpu/cpu_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto t = vcpu::ParseCpuTemplateJson(text);
  if (!t.ok()) return 0;
  vcpu::CpuidTable table(4);
  for (uint32_t i = 0; i < 4; ++i) table[i].function = i;
  (void)vcpu::ApplyCpuTemplate(table, *t);
  std::vector<kvm_msr_entry> msrs;
  (void)vcpu::ApplyMsrTemplate(msrs, *t, {0x10a, 0x1b});
  return 0;
}
