package tools

// Approval outcomes: the bounded label of the approvals metric.
const (
	OutcomeApproved       = "approved"        // a user approved
	OutcomeDenied         = "denied"          // a user denied
	OutcomeTimedOut       = "timed_out"       // nobody decided within the approval timeout (denied)
	OutcomeCancelled      = "cancelled"       // the waiting call was cancelled (denied)
	OutcomePolicyApproved = "policy_approved" // the policy allowed the call without asking
	OutcomePolicyDenied   = "policy_denied"   // the policy denied it, too many were pending, or Redis failed
)

// ApprovalOutcomes returns every approval outcome.
func ApprovalOutcomes() []string {
	return []string{OutcomeApproved, OutcomeDenied, OutcomeTimedOut, OutcomeCancelled,
		OutcomePolicyApproved, OutcomePolicyDenied}
}

// Outcome classifies the result by who decided and how (one of
// ApprovalOutcomes).
func (r ApprovalResult) Outcome() string {
	switch r.DecidedBy {
	case DecidedByPolicy:
		if r.Approved {
			return OutcomePolicyApproved
		}
		return OutcomePolicyDenied
	case DecidedByTimeout:
		return OutcomeTimedOut
	case DecidedByCancel:
		return OutcomeCancelled
	}
	if r.Approved {
		return OutcomeApproved
	}
	return OutcomeDenied
}
