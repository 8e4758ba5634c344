// kolabus bench: runs the benchmark harness, kolabus-bench, installed next to this
// binary (bench/README.md). Every argument after `bench` is passed on unchanged.
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <unistd.h>

#include "commands.h"

namespace kolabus::cli {

void add_bench(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "bench",
      "Measure kolabus against the limit of its design (a naive ZeroMQ + RocksDB loop) and "
      "against NATS JetStream and Redis Streams when installed: publish throughput, "
      "end-to-end latency, catch-up, fan-out, start-up. All on 127.0.0.1. Runs "
      "kolabus-bench; `kolabus bench --help` for its options (--quick for a short run).");
  cmd->allow_extras();
  cmd->set_help_flag();  // --help goes to kolabus-bench
  cmd->callback([cmd, &exit_code] {
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    const auto bench =
        (ec ? std::filesystem::path("kolabus-bench") : self.parent_path() / "kolabus-bench")
            .string();
    std::vector<std::string> args{bench};
    for (const auto& a : cmd->remaining()) args.push_back(a);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(bench.c_str(), argv.data());
    std::cerr << "kolabus bench: cannot run " << bench << " (build the kolabus-bench target)\n";
    exit_code = kUsage;
  });
}

}  // namespace kolabus::cli
