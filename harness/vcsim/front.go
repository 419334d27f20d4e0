package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"html"
	"io"
	"io/ioutil"
	"net/http"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

const cookieName = "vmware_soap_session"

// soapCall is what the front needs to know about a request.
type soapCall struct {
	Method string
	This   string
	Force  bool
}

// parseCall finds the method element under Body, its _this and force.
func parseCall(body []byte) (soapCall, error) {
	var c soapCall
	d := xml.NewDecoder(bytes.NewReader(body))
	depth, inBody, field := 0, false, ""
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return c, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if t.Name.Local == "Body" {
				inBody = true
			} else if inBody && c.Method == "" {
				c.Method = t.Name.Local
			} else if c.Method != "" {
				field = t.Name.Local
			}
		case xml.EndElement:
			depth--
			field = ""
		case xml.CharData:
			switch field {
			case "_this":
				c.This = string(bytes.TrimSpace(t))
			case "force":
				c.Force = string(bytes.TrimSpace(t)) == "true"
			}
		}
	}
	return c, nil
}

func envelope(body string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>` +
		`<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">` +
		`<soapenv:Body>` + body + `</soapenv:Body></soapenv:Envelope>`
}

func writeFault(w http.ResponseWriter, kind, msg, inner string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprint(w, envelope(fmt.Sprintf(
		`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring><detail><%sFault xmlns="urn:vim25" xsi:type="%s">%s</%sFault></detail></soapenv:Fault>`,
		html.EscapeString(msg), kind, kind, inner, kind)))
}

func writeTask(w http.ResponseWriter, method, task string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	fmt.Fprint(w, envelope(fmt.Sprintf(`<%sResponse xmlns="urn:vim25"><returnval type="Task">%s</returnval></%sResponse>`, method, task, method)))
}

// recorder captures the session cookie the simulator hands out on Login.
type recorder struct {
	http.ResponseWriter
	h *Harness
}

func (r *recorder) WriteHeader(code int) {
	for _, c := range (&http.Response{Header: r.Header()}).Cookies() {
		if c.Name == cookieName {
			r.h.mu.Lock()
			r.h.sessions[c.Value] = true
			r.h.mu.Unlock()
		}
	}
	r.ResponseWriter.WriteHeader(code)
}

// hangUp drops the connection without an answer, as a dark host does.
func hangUp(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	w.WriteHeader(http.StatusServiceUnavailable)
}

func (h *Harness) serveSDK(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		h.SDK.ServeHTTP(w, r)
		return
	}
	body, err := ioutil.ReadAll(io.LimitReader(r.Body, 64<<20))
	_ = r.Body.Close()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	call, _ := parseCall(body)

	h.mu.Lock()
	h.calls[call.Method]++
	delay := h.latency[call.Method]
	anyDark := false
	for _, d := range h.dark {
		anyDark = anyDark || d
	}
	cookie := ""
	if c, err := r.Cookie(cookieName); err == nil {
		cookie = c.Value
	}
	valid, known := h.sessions[cookie]
	mode := h.vmMode[call.This]
	h.mu.Unlock()

	if delay > 0 {
		time.Sleep(delay)
	}
	// An ESXi host that is shut down answers nothing at all.
	if !h.VPX && anyDark {
		hangUp(w)
		return
	}
	// Sessions the control server expired get NotAuthenticated, whatever
	// the simulator (which lets some calls through without a session) thinks.
	if call.Method != "RetrieveServiceContent" && call.Method != "Login" && known && !valid {
		writeFault(w, "NotAuthenticated", "The session is not authenticated.",
			`<object type="Folder">group-d1</object><privilegeId>System.View</privilegeId>`)
		return
	}
	authed := known && valid

	switch call.Method {
	case "ShutdownHost_Task", "RebootHost_Task":
		if !authed {
			writeFault(w, "NotAuthenticated", "The session is not authenticated.", "")
			return
		}
		h.hostPower(w, call)
		return
	case "SuspendVM_Task":
		// vSphere refuses to suspend a VM that is not running; 0.24.2 suspends it.
		if vm := h.vmByRef(call.This); vm != nil && authed && vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			writeFault(w, "InvalidPowerState", "The attempted operation cannot be performed in the current state ("+string(vm.Runtime.PowerState)+").",
				"<requestedState>poweredOn</requestedState><existingState>"+string(vm.Runtime.PowerState)+"</existingState>")
			return
		}
	case "RebootGuest":
		// Missing in 0.24.2: needs a running VM with tools; the guest reboots in place.
		if vm := h.vmByRef(call.This); vm != nil && authed {
			if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
				writeFault(w, "InvalidPowerState", "The attempted operation cannot be performed in the current state ("+string(vm.Runtime.PowerState)+").",
					"<requestedState>poweredOn</requestedState><existingState>"+string(vm.Runtime.PowerState)+"</existingState>")
				return
			}
			if mode == "toolless" {
				writeFault(w, "ToolsUnavailable", "Cannot complete operation because VMware Tools is not running in this virtual machine.", "")
				return
			}
			w.Header().Set("Content-Type", "text/xml; charset=utf-8")
			fmt.Fprint(w, envelope(`<RebootGuestResponse xmlns="urn:vim25"></RebootGuestResponse>`))
			return
		}
	case "ShutdownGuest":
		switch mode {
		case "stubborn":
			if !authed {
				break
			}
			if vm, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: call.This}).(*simulator.VirtualMachine); ok && vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
				// Accepted, and ignored: the guest never shuts down.
				w.Header().Set("Content-Type", "text/xml; charset=utf-8")
				fmt.Fprint(w, envelope(`<ShutdownGuestResponse xmlns="urn:vim25"></ShutdownGuestResponse>`))
				return
			}
		case "toolless":
			if !authed {
				break
			}
			writeFault(w, "ToolsUnavailable", "Cannot complete operation because VMware Tools is not running in this virtual machine.", "")
			return
		default:
			h.mu.Lock()
			delayed := h.guestShutdown > 0
			h.mu.Unlock()
			ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: call.This}
			if vm := h.vmByRef(call.This); delayed && authed && vm != nil && vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
				// Accepted at once; the guest stops -guest-shutdown-ms later
				// (see shutdownGuest for the documented rule).
				_ = h.shutdownGuest(context.Background(), ref)
				w.Header().Set("Content-Type", "text/xml; charset=utf-8")
				fmt.Fprint(w, envelope(`<ShutdownGuestResponse xmlns="urn:vim25"></ShutdownGuestResponse>`))
				return
			}
		}
	}

	r.Body = ioutil.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	h.SDK.ServeHTTP(&recorder{w, h}, r)
}

// hostPower implements ShutdownHost_Task and RebootHost_Task: the host's
// VMs are powered off, then the host goes dark (an ESXi endpoint stops
// answering; under vCenter the host is notResponding); a reboot comes back.
func (h *Harness) hostPower(w http.ResponseWriter, call soapCall) {
	host, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "HostSystem", Value: call.This}).(*simulator.HostSystem)
	if !ok {
		writeFault(w, "ManagedObjectNotFound", "managed object not found: "+call.This,
			fmt.Sprintf(`<obj type="HostSystem">%s</obj>`, html.EscapeString(call.This)))
		return
	}
	if !call.Force && !host.Runtime.InMaintenanceMode {
		writeFault(w, "InvalidState", "The operation is not allowed in the current state.", "")
		return
	}
	reboot := call.Method == "RebootHost_Task"
	name := "shutdownHost"
	if reboot {
		name = "rebootHost"
	}
	task := simulator.CreateTask(host, name, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, nil
	})
	ref := task.Run()
	writeTask(w, call.Method, ref.Value)

	go func() {
		time.Sleep(h.darkDelay)
		h.goDark(host)
		if reboot {
			time.Sleep(h.rebootTime)
			h.comeBack(host)
		}
	}()
}

func (h *Harness) goDark(host *simulator.HostSystem) {
	ctx := context.Background()
	for _, vm := range h.allVMs() {
		if vm.Runtime.Host == nil || vm.Runtime.Host.Value != host.Self.Value {
			continue
		}
		if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
			if task, err := object.NewVirtualMachine(h.Client, vm.Self).PowerOff(ctx); err == nil {
				_ = task.Wait(ctx)
			}
		}
		h.setTools(vm, string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning))
	}
	simulator.Map.WithLock(host, func() {
		simulator.Map.Update(host, []types.PropertyChange{
			{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateNotResponding},
			{Name: "runtime.powerState", Val: types.HostSystemPowerStatePoweredOff},
			{Name: "summary.runtime.connectionState", Val: types.HostSystemConnectionStateNotResponding},
			{Name: "summary.runtime.powerState", Val: types.HostSystemPowerStatePoweredOff},
		})
	})
	h.mu.Lock()
	h.dark[host.Self.Value] = true
	h.mu.Unlock()
}

func (h *Harness) comeBack(host *simulator.HostSystem) {
	simulator.Map.WithLock(host, func() {
		simulator.Map.Update(host, []types.PropertyChange{
			{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateConnected},
			{Name: "runtime.powerState", Val: types.HostSystemPowerStatePoweredOn},
			{Name: "summary.runtime.connectionState", Val: types.HostSystemConnectionStateConnected},
			{Name: "summary.runtime.powerState", Val: types.HostSystemPowerStatePoweredOn},
		})
	})
	h.mu.Lock()
	delete(h.dark, host.Self.Value)
	h.mu.Unlock()
}
