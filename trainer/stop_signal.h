// Graceful stop on SIGTERM/SIGINT (what SLURM and Kubernetes send before killing a job): the first
// signal only sets a flag that the training loop checks between steps, so the current step
// finishes and a checkpoint is saved; a second signal falls through to the default action (an
// impatient Ctrl-C still kills). Not a general signal framework.
#pragma once

namespace longtune::trainer {

// Exit status of a run stopped by a signal after saving its checkpoint (EX_TEMPFAIL: "try again";
// rerunning the same command resumes).
inline constexpr int kExitPreempted = 75;

// Installs the handlers (idempotent).
void install_stop_handlers();
// Whether a stop was requested since install_stop_handlers(); the signal number, or 0.
int stop_requested();

}  // namespace longtune::trainer
