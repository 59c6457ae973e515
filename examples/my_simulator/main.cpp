// A toy detector simulation instrumented with probexec: three calls where it draws random numbers.
#include <probexec/probexec.hpp>

#include <cmath>

namespace {

// A particle of unknown energy deposits a fraction of it; the detector smears the reading.
probexec::Tensor detector() {
  using namespace probexec;
  double energy = sample(Gamma(4.0, 0.2), "energy");           // GeV, prior mean 20
  double fraction = sample(Beta(8.0, 2.0), "sampling_fraction");
  double deposit = energy * fraction;
  tag(deposit, "deposit");
  observe(Normal(deposit, 0.1 * std::sqrt(deposit) + 0.05), "reading");  // engine supplies the value
  return energy;
}

}  // namespace

int main(int argc, char** argv) { return probexec::serve(detector, argc, argv, "my_simulator"); }
