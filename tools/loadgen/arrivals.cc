#include "tools/loadgen/arrivals.h"

namespace glimpse::tools::loadgen {

ArrivalSchedule::ArrivalSchedule(double rate, double burstiness, uint64_t seed)
    : rng_(seed), gap_(burstiness, 1.0 / (rate * burstiness)) {}

double ArrivalSchedule::NextGapSeconds() { return gap_(rng_); }

}  // namespace glimpse::tools::loadgen
