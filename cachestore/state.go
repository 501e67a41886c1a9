package cachestore

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// prefixState is z/<name>: small state of warren's other parts kept in the
// index beside the blobs it describes (the status page's last day of
// bytes), so that a restart does not start it afresh.
const prefixState = "z/"

// maxState bounds one state value: the index holds facts, not documents.
const maxState = 64 << 10

// PutState keeps b as the state called name, replacing what was kept.
func (s *Store) PutState(name string, b []byte) error {
	if len(b) > maxState {
		return fmt.Errorf("keep %s in the index: %d bytes, more than %d", name, len(b), maxState)
	}
	if err := s.indexRoom(); err != nil {
		return fmt.Errorf("keep %s in the index: %w", name, err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(prefixState+name), b) }); err != nil {
		return fmt.Errorf("keep %s in the index: %w", name, err)
	}
	return nil
}

// State is what PutState kept as name (ErrNotFound: nothing).
func (s *Store) State(name string) ([]byte, error) {
	var out []byte
	err := s.getWith(prefixState+name, func(b []byte) error {
		out = append([]byte(nil), b...)
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNotFound
	}
	return out, err
}
