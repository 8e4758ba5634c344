// kolabus consumers: the durable consumers of this agency with their positions and
// backlog; `kolabus consumers delete NAME` removes one.
#include <iostream>

#include "commands.h"
#include "output.h"

namespace kolabus::cli {

void add_consumers(CLI::App& app, int& exit_code) {
  struct Args {
    ConnectArgs conn;
    std::string name;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "consumers",
      "List the durable consumers of this agency: filter, position, backlog and dead letters. "
      "LAG counts matching events not yet acknowledged; OLDEST-UNACKED is the age of the "
      "oldest delivery still waiting for its ack.");
  add_connect_options(cmd, args->conn);
  auto* del = cmd->add_subcommand(
      "delete",
      "Delete a durable consumer: its position, pending deliveries and dead letters. Clients "
      "still attached are detached. The log itself is untouched.");
  del->add_option("name", args->name, "the consumer")->required();

  del->callback([args, &exit_code] {
    auto admin = connect_admin(args->conn);
    if (!admin) return void(exit_code = report_connect_error("consumers delete", admin.error()));
    if (auto st = (*admin)->delete_consumer(args->name); !st) {
      return void(exit_code = report_error("consumers delete", st.error()));
    }
    if (args->conn.json) {
      std::cout << nlohmann::ordered_json{{"deleted", args->name}}.dump() << "\n";
    } else {
      std::cout << "deleted consumer " << args->name << "\n";
    }
    exit_code = kOk;
  });

  cmd->callback([args, del, &exit_code] {
    if (del->parsed()) return;  // `consumers delete` ran its own callback
    auto admin = connect_admin(args->conn);
    if (!admin) return void(exit_code = report_connect_error("consumers", admin.error()));
    auto list = (*admin)->list_consumers();
    if (!list) return void(exit_code = report_error("consumers", list.error()));
    exit_code = kOk;
    if (args->conn.json) {
      for (const auto& c : *list) std::cout << consumer_json(c).dump() << "\n";
      return;
    }
    if (list->empty()) {
      std::cout << "no consumers\n";
      return;
    }
    Table table({"NAME", "OWNER", "KINDS", "REGIONS", "ACK-FLOOR", "NEXT", "PENDING", "LAG",
                 "OLDEST-UNACKED", "CLIENTS", "DEAD", "STATE"});
    std::vector<std::string> paused;
    for (const auto& c : *list) {
      std::string regions;
      for (const auto& r : c.filter.regions) regions += (regions.empty() ? "" : ",") + r;
      table.add({c.name, c.owner, kinds_text(c.filter.kinds), regions.empty() ? "*" : regions,
                 std::to_string(c.ack_floor), std::to_string(c.next_sequence),
                 std::to_string(c.pending), std::to_string(c.lag),
                 format_age(c.oldest_unacked_age_ms), std::to_string(c.clients),
                 std::to_string(c.dead_letters), c.paused.empty() ? "delivering" : "paused"});
      if (!c.paused.empty()) paused.push_back(c.owner + "/" + c.name + " is paused: " + c.paused);
    }
    std::cout << table.render();
    for (const auto& p : paused) std::cout << p << "\n";
  });
}

}  // namespace kolabus::cli
