// Request arrival times for open-loop load: a Poisson process at `rate` requests per second,
// or, with burstiness != 1, gamma-distributed gaps (shape = burstiness, mean = 1/rate) as
// vLLM's benchmark does — burstiness < 1 is burstier than Poisson, > 1 more regular.
// Deterministic for a seed (on one standard library; std::gamma_distribution's algorithm is
// the library's).
#ifndef GLIMPSE_TOOLS_LOADGEN_ARRIVALS_H_
#define GLIMPSE_TOOLS_LOADGEN_ARRIVALS_H_

#include <cstdint>
#include <random>

namespace glimpse::tools::loadgen {

class ArrivalSchedule {
 public:
  // rate > 0 requests/s; burstiness > 0 (1 = Poisson).
  ArrivalSchedule(double rate, double burstiness, uint64_t seed);
  // Seconds from the previous arrival to the next.
  double NextGapSeconds();

 private:
  std::mt19937_64 rng_;
  std::gamma_distribution<double> gap_;
};

}  // namespace glimpse::tools::loadgen

#endif  // GLIMPSE_TOOLS_LOADGEN_ARRIVALS_H_
