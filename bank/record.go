package bank

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/bankrpc/bankrpc"
)

// The log record, version 2 (FORMAT.md has the table):
//
//	u32 body length | u32 CRC-32C of (length field, body) | body
//	body: u8 version | u8 op | u8 code | u8 flags | u64 lsn | i32 account |
//	      i32 to | i64 amount | i64 value | i64 aux | u64 first unanswered |
//	      i64 time | u8 call id length | call id
//
// Version 1 (still read) has neither aux, first unanswered nor time.
const (
	recordVersion     = 2
	recordVersion1    = 1
	recordHeaderSize  = 8
	recordFixedBody   = 61
	recordFixedBodyV1 = 37
	// maxCallIDLen is the longest call id the bank accepts (one length byte).
	maxCallIDLen  = 255
	maxRecordBody = recordFixedBody + maxCallIDLen
	// maxRecordSize is the largest a record can be, header included.
	maxRecordSize = recordHeaderSize + maxRecordBody
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// record is one applied mutating call, as the log stores it.
type record struct {
	lsn    uint64 // sequence number: 1 for the bank's first record, then +1
	req    request
	res    result
	callID string
	// fu is the request's first unanswered sequence number (0: unknown, or
	// no session).
	fu uint64
	// time is the bank time of the call (FORMAT.md, "Time").
	time int64
	// v1 is set on a record decoded from version 1, which has no aux, fu
	// or time.
	v1 bool
}

// appendRecord appends the encoding of r, in the current version, to dst.
func appendRecord(dst []byte, r *record) []byte {
	start := len(dst)
	bodyLen := recordFixedBody + len(r.callID)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(bodyLen))
	dst = append(dst, 0, 0, 0, 0) // CRC, filled below
	dst = append(dst, recordVersion, byte(r.req.op), byte(r.res.code), r.res.flags)
	dst = binary.LittleEndian.AppendUint64(dst, r.lsn)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(r.req.account))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(r.req.to))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.req.amount))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.res.value))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.res.aux))
	dst = binary.LittleEndian.AppendUint64(dst, r.fu)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(r.time))
	dst = append(dst, byte(len(r.callID)))
	dst = append(dst, r.callID...)
	binary.LittleEndian.PutUint32(dst[start+4:], recordChecksum(dst[start:start+4], dst[start+recordHeaderSize:]))
	return dst
}

func recordChecksum(length, body []byte) uint32 {
	return crc32.Update(crc32.Checksum(length, castagnoli), castagnoli, body)
}

// Record decoding errors. decodeRecord returns errRecordTruncated when b
// ends inside the record, a *recordLengthError for a length no record has,
// errRecordChecksum when the checksum does not match, a *VersionError for a
// record of another format version, and a *recordFieldError for a record
// that is well formed but impossible.
var (
	errRecordTruncated = errors.New("the record is cut short")
	errRecordChecksum  = errors.New("checksum mismatch")
)

// recordLengthError reports a length field no record can have.
type recordLengthError struct{ n uint32 }

func (e *recordLengthError) Error() string {
	return fmt.Sprintf("impossible record length %d (a record body is %d to %d bytes)", e.n, recordFixedBodyV1, maxRecordBody)
}

// recordFieldError reports a record whose checksum matches but whose fields
// no record the bank writes can have.
type recordFieldError struct{ msg string }

func (e *recordFieldError) Error() string { return e.msg }

func fieldErrorf(format string, args ...any) error {
	return &recordFieldError{fmt.Sprintf(format, args...)}
}

// decodeRecord decodes the record at the start of b, of version 1 or 2, and
// returns it with its encoded size.
func decodeRecord(b []byte) (record, int, error) {
	if len(b) < recordHeaderSize {
		return record{}, 0, errRecordTruncated
	}
	n := binary.LittleEndian.Uint32(b)
	if n < recordFixedBodyV1 || n > maxRecordBody {
		return record{}, 0, &recordLengthError{n}
	}
	size := recordHeaderSize + int(n)
	if len(b) < size {
		return record{}, 0, errRecordTruncated
	}
	body := b[recordHeaderSize:size]
	if recordChecksum(b[:4], body) != binary.LittleEndian.Uint32(b[4:]) {
		return record{}, 0, errRecordChecksum
	}
	fixed := recordFixedBody
	switch v := body[0]; v {
	case recordVersion:
	case recordVersion1:
		fixed = recordFixedBodyV1
	default:
		return record{}, 0, &VersionError{What: "log record", Got: uint32(v), Want: recordVersion}
	}
	if int(n) < fixed {
		return record{}, 0, fieldErrorf("record body of %d bytes is shorter than a version %d record's %d", n, body[0], fixed)
	}
	r := record{
		req: request{
			op:      op(body[1]),
			account: int32(binary.LittleEndian.Uint32(body[12:])),
			to:      int32(binary.LittleEndian.Uint32(body[16:])),
			amount:  int64(binary.LittleEndian.Uint64(body[20:])),
		},
		res: result{
			code:  codeOf(body[2]),
			flags: body[3],
			value: int64(binary.LittleEndian.Uint64(body[28:])),
		},
		lsn: binary.LittleEndian.Uint64(body[4:]),
		v1:  body[0] == recordVersion1,
	}
	if !r.v1 {
		r.res.aux = int64(binary.LittleEndian.Uint64(body[36:]))
		r.fu = binary.LittleEndian.Uint64(body[44:])
		r.time = int64(binary.LittleEndian.Uint64(body[52:]))
	}
	if k := int(body[fixed-1]); fixed+k != int(n) {
		return record{}, 0, fieldErrorf("call id length %d does not fit a record body of %d bytes", k, n)
	}
	r.callID = string(body[fixed:])
	switch {
	case !r.req.op.valid(), r.v1 && r.req.op == opSetCreditLimit:
		return record{}, 0, fieldErrorf("unknown operation %d", body[1])
	case !recordableCode(r.res.code):
		return record{}, 0, fieldErrorf("result code %s is not one the bank records", r.res.code)
	case r.res.flags&^(resultCreated|resultReceiver) != 0:
		return record{}, 0, fieldErrorf("unknown result flags %#x", r.res.flags)
	case r.v1 && r.req.op == opOpen && r.req.amount != 0:
		return record{}, 0, fieldErrorf("version 1 open record with amount %d", r.req.amount)
	}
	if err := r.req.validate(); err != nil {
		return record{}, 0, fieldErrorf("invalid %s request: %s", r.req.op, bankrpc.MessageOf(err))
	}
	if !r.v1 && r.callID != "" {
		c := callRefOf(r.callID, r.fu)
		if c.session == "" {
			return record{}, 0, fieldErrorf("call id %q is not of the session form", r.callID)
		}
		if c.fu != r.fu {
			return record{}, 0, fieldErrorf("first unanswered %d is above the call's sequence number %d", r.fu, c.seq)
		}
	}
	if !r.v1 && r.callID == "" && r.fu != 0 {
		return record{}, 0, fieldErrorf("first unanswered %d without a call id", r.fu)
	}
	return r, size, nil
}
