// Tau-lepton decay kinematics on the probexec front end.
//
// `decay_tau` decays a tau- of given lab momentum into one of the ten main channels of
// physics::kTauBranchingFractions (renormalised), decaying in the tau rest frame and boosting the
// products to the lab. Every random number is a named probexec::sample:
//   channel                        Categorical over the channels
//   decay<k>/cos_theta, decay<k>/phi  the k-th two-body split of this decay (isotropic)
//   <res>/mass_candidate, <res>/accept  Breit-Wigner rejection for res in rho, a1, kstar, a1/rho
//                                     (replace = true: one proposal serves every iteration)
//   phase_space/u<k>, phase_space/accept  GENBOD phase-space rejection (replace = true)
//   pi0_<k>/cos_theta, pi0_<k>/phi    pi0 -> gamma gamma in the pi0 rest frame
// See README.md for the channels, the methods and the choices made.
#pragma once

#include <probexec/probexec.hpp>

#include <array>
#include <string>
#include <vector>

#include "../physics/constants.hpp"
#include "fourvector.hpp"

namespace probexec::tau {

using physics::TauChannel;

// A final-state particle: PDG code (signed: -211 is pi-) and lab four-momentum (GeV).
struct Particle {
  int pdg = 0;
  FourVector p;
};

// One accepted resonance mass (kept for physics checks): which resonance, its value and the
// kinematic range [low, high] it was drawn in.
struct ResonanceMass {
  std::string name;  // "rho", "a1", "kstar", "a1/rho"
  double mass = 0, low = 0, high = 0;
};

struct Decay {
  TauChannel channel = TauChannel::Pion;
  FourVector tau;                          // lab four-momentum of the tau
  std::vector<Particle> products;          // lab, final state: neutrinos included, pi0 -> gamma gamma done
  std::vector<ResonanceMass> resonances;   // in the order drawn
};

// The channel probabilities: the branching fractions of constants.hpp renormalised to sum to 1.
std::array<double, physics::kNumTauChannels> channel_probabilities();

// Unnormalised relativistic Breit-Wigner in the mass m: 1 / ((m^2 - M^2)^2 + M^2 Gamma^2)
// (fixed width). Its maximum is at m = M, and it is monotone on either side.
double breit_wigner(double m, double mass, double width);

// Mass of a final-state particle by PDG code (|pdg|); neutrinos and photons are massless.
double particle_mass(int pdg);
bool is_neutrino(int pdg);

// Decays a tau- of lab momentum (px, py, pz) GeV.
Decay decay_tau(double px, double py, double pz);
// The same with the channel fixed (no "channel" draw); for tests and channel studies.
Decay decay_tau(double px, double py, double pz, TauChannel channel);

// Observables of a decay.
FourVector visible_momentum(const Decay& d);  // sum over non-neutrinos
FourVector missing_momentum(const Decay& d);  // sum over neutrinos
double visible_energy(const Decay& d);
double missing_pt(const Decay& d);

// Tags the final state: fs_<i>_p (tensor [E, px, py, pz]) and fs_<i>_pdg for each product,
// then visible_energy, missing_pt and visible_mass.
void tag_decay(const Decay& d);

}  // namespace probexec::tau
