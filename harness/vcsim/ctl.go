package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func writeJSON(w http.ResponseWriter, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (h *Harness) vmByRef(ref string) *simulator.VirtualMachine {
	vm, _ := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: ref}).(*simulator.VirtualMachine)
	return vm
}

func (h *Harness) hostByRef(ref string) *simulator.HostSystem {
	host, _ := simulator.Map.Get(types.ManagedObjectReference{Type: "HostSystem", Value: ref}).(*simulator.HostSystem)
	return host
}

// registerCtl adds the control endpoints (plain HTTP, loopback):
//
//	GET /truth                               ground truth (JSON)
//	GET /ctl/vm-mode?vm=REF&mode=stubborn|toolless|normal
//	GET /ctl/relocate?vm=REF&host=REF        RelocateVM_Task through the API
//	GET /ctl/shuffle?n=N                     N random relocations within datacenters
//	GET /ctl/expire-sessions                 every session so far is expired
//	GET /ctl/latency?method=NAME&ms=N
//	GET /ctl/host-power?host=REF&on=1|0      a dark host comes back (or goes dark)
//	GET /ctl/stats                           SOAP requests seen, per method
//	GET /ctl/guest-shutdown?ms=N             guests power off N ms after ShutdownGuest
func (h *Harness) registerCtl() {
	h.Ctl.HandleFunc("/ctl/guest-shutdown", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 {
			http.Error(w, "ms must be a whole number of milliseconds, 0 or more", http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.guestShutdown = time.Duration(ms) * time.Millisecond
		h.mu.Unlock()
		writeJSON(w, map[string]int{"guest_shutdown_ms": ms})
	})
	h.Ctl.HandleFunc("/ctl/stats", func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		out := map[string]int{}
		for k, v := range h.calls {
			out[k] = v
		}
		h.mu.Unlock()
		writeJSON(w, out)
	})
	h.Ctl.HandleFunc("/truth", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, h.truth())
	})
	h.Ctl.HandleFunc("/ctl/vm-mode", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		vm := h.vmByRef(q.Get("vm"))
		if vm == nil {
			http.Error(w, "no such vm", http.StatusNotFound)
			return
		}
		mode := q.Get("mode")
		h.mu.Lock()
		if mode == "normal" || mode == "" {
			delete(h.vmMode, vm.Self.Value)
		} else {
			h.vmMode[vm.Self.Value] = mode
		}
		h.mu.Unlock()
		status := types.VirtualMachineToolsRunningStatusGuestToolsRunning
		if mode == "toolless" || vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			status = types.VirtualMachineToolsRunningStatusGuestToolsNotRunning
		}
		h.setTools(vm, string(status))
		writeJSON(w, map[string]string{"vm": vm.Self.Value, "mode": mode})
	})
	h.Ctl.HandleFunc("/ctl/relocate", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		vm, host := h.vmByRef(q.Get("vm")), h.hostByRef(q.Get("host"))
		if vm == nil || host == nil {
			http.Error(w, "no such vm or host", http.StatusNotFound)
			return
		}
		from, err := h.relocate(context.Background(), vm, host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]string{"vm": vm.Self.Value, "from": from, "to": host.Self.Value})
	})
	h.Ctl.HandleFunc("/ctl/shuffle", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		hostsByDC := map[string][]*simulator.HostSystem{}
		for _, host := range h.allHosts() {
			dc := datacenterOf(host.Self)
			hostsByDC[dc] = append(hostsByDC[dc], host)
		}
		vms := h.allVMs()
		moves := []map[string]string{}
		for i := 0; i < n && len(vms) > 0; i++ {
			h.mu.Lock()
			vm := vms[h.rng.Intn(len(vms))]
			hs := hostsByDC[datacenterOf(vm.Self)]
			var to *simulator.HostSystem
			if len(hs) > 0 {
				to = hs[h.rng.Intn(len(hs))]
			}
			h.mu.Unlock()
			if to == nil || (vm.Runtime.Host != nil && vm.Runtime.Host.Value == to.Self.Value) {
				continue
			}
			from, err := h.relocate(context.Background(), vm, to)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			moves = append(moves, map[string]string{"vm": vm.Self.Value, "from": from, "to": to.Self.Value})
		}
		writeJSON(w, moves)
	})
	h.Ctl.HandleFunc("/ctl/expire-sessions", func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		n := 0
		for k, v := range h.sessions {
			if v {
				h.sessions[k] = false
				n++
			}
		}
		h.mu.Unlock()
		writeJSON(w, map[string]int{"expired": n})
	})
	h.Ctl.HandleFunc("/ctl/latency", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ms, _ := strconv.Atoi(q.Get("ms"))
		h.mu.Lock()
		h.latency[q.Get("method")] = time.Duration(ms) * time.Millisecond
		h.mu.Unlock()
		writeJSON(w, map[string]int{q.Get("method"): ms})
	})
	h.Ctl.HandleFunc("/ctl/host-power", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		host := h.hostByRef(q.Get("host"))
		if host == nil {
			http.Error(w, "no such host", http.StatusNotFound)
			return
		}
		if q.Get("on") == "0" {
			h.goDark(host)
		} else {
			h.comeBack(host)
		}
		writeJSON(w, map[string]string{"host": host.Self.Value})
	})
}
