// intake.h - the intake thread: watch the spool, stream jobs into the queue
//
// DESCRIPTION
//   Runs beside the shard so that taking in a million-line job never stalls
//   delivery. It scans incoming/ at start and on every inotify event (and once
//   a second, in case an event was missed), takes each file in (queue/spool.h),
//   and hands the id of each job that became ready to the shard through a
//   mailbox whose eventfd the shard's ring reads.
//
//   A queue or disk error (disk full, a RocksDB write error) pauses intake: the
//   file stays in incoming/, the reason is logged once, and intake tries again
//   every few seconds. Delivery of what is queued goes on meanwhile.
#ifndef VOLLEY_ENGINE_INTAKE_H_
#define VOLLEY_ENGINE_INTAKE_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "queue/job.h"
#include "queue/queue.h"
#include "queue/spool.h"

namespace volley::engine {

// ReadyJobs - the mailbox from the intake thread to the shard.
class ReadyJobs {
 public:
  ReadyJobs();
  ~ReadyJobs();
  int event_fd() const { return event_fd_; }
  void Push(std::string job_id);
  std::vector<std::string> TakeAll();

 private:
  int event_fd_;
  std::mutex mu_;
  std::vector<std::string> jobs_;
};

class IntakeThread {
 public:
  IntakeThread(queue::Spool spool, queue::Queue* queue, queue::JobLimits limits,
               ReadyJobs* ready);
  ~IntakeThread();  // stops and joins
  void Start();

 private:
  void Loop();
  void ScanOnce();
  queue::Spool spool_;
  queue::Queue* queue_;
  queue::JobLimits limits_;
  ReadyJobs* ready_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  bool paused_ = false;
};

}  // namespace volley::engine

#endif  // VOLLEY_ENGINE_INTAKE_H_
