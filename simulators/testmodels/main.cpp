// Server executable for one test model; PROBEXEC_MODEL names the model function.
#include "testmodels.hpp"

int main(int argc, char** argv) {
  return probexec::serve(probexec::testmodels::PROBEXEC_MODEL, argc, argv, PROBEXEC_MODEL_NAME);
}
