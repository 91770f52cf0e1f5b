package seed

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's test run if any goroutine is still running
// once its tests have ended: whatever a test starts, it must stop. No
// goroutine is ignored; none of the libraries used here leaves one behind
// once closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
