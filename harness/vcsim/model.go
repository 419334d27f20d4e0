package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// vmsOf lists every simulated VM.
func (h *Harness) allVMs() []*simulator.VirtualMachine {
	var out []*simulator.VirtualMachine
	for _, e := range simulator.Map.All("VirtualMachine") {
		if vm, ok := e.(*simulator.VirtualMachine); ok {
			out = append(out, vm)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Self.Value < out[j].Self.Value })
	return out
}

func (h *Harness) allHosts() []*simulator.HostSystem {
	var out []*simulator.HostSystem
	for _, e := range simulator.Map.All("HostSystem") {
		if host, ok := e.(*simulator.HostSystem); ok {
			out = append(out, host)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Self.Value < out[j].Self.Value })
	return out
}

// datacenterOf walks up the parents to the datacenter ("" if none).
func datacenterOf(ref types.ManagedObjectReference) string {
	for i := 0; i < 32; i++ {
		if ref.Type == "Datacenter" {
			return ref.Value
		}
		obj := simulator.Map.Get(ref)
		ent, ok := obj.(mo.Entity)
		if !ok || ent.Entity().Parent == nil {
			return ""
		}
		ref = *ent.Entity().Parent
	}
	return ""
}

// poolOf is the root resource pool of the compute resource holding host.
func poolOf(host *simulator.HostSystem) *types.ManagedObjectReference {
	if host.Parent == nil {
		return nil
	}
	switch cr := simulator.Map.Get(*host.Parent).(type) {
	case *simulator.ClusterComputeResource:
		return cr.ResourcePool
	case *mo.ComputeResource:
		return cr.ResourcePool
	}
	return nil
}

var (
	cpuChoices = []int32{1, 2, 4, 8}
	memChoices = []int32{512, 1024, 2048, 4096, 8192}
)

// prepareModel gives every VM a unique instance UUID, guest IPs and tools
// state; with randomize it also spreads VMs over the hosts of their
// datacenter, powers some off and varies sizes.
func (h *Harness) prepareModel(randomize bool) {
	hostsByDC := map[string][]*simulator.HostSystem{}
	for _, host := range h.allHosts() {
		dc := datacenterOf(host.Self)
		hostsByDC[dc] = append(hostsByDC[dc], host)
	}
	ctx := context.Background()
	for i, vm := range h.allVMs() {
		uuid := fmt.Sprintf("50%06x-%04x-%04x-%04x-%012x", i, h.rng.Intn(1<<16), 0x4000|h.rng.Intn(1<<12), 0x8000|h.rng.Intn(1<<14), h.rng.Int63n(1<<48))
		ip := fmt.Sprintf("10.%d.%d.%d", (i/62500)%256, (i/250)%250, i%250+1)
		ip6 := fmt.Sprintf("fd00::%x", i+1)
		cpu, mem := vm.Config.Hardware.NumCPU, vm.Config.Hardware.MemoryMB
		if randomize {
			cpu = cpuChoices[h.rng.Intn(len(cpuChoices))]
			mem = memChoices[h.rng.Intn(len(memChoices))]
		}
		simulator.Map.WithLock(vm, func() {
			nets := []types.GuestNicInfo{{Network: "VM Network", IpAddress: []string{ip, ip6}, Connected: true, MacAddress: fmt.Sprintf("00:50:56:%02x:%02x:%02x", (i>>16)&255, (i>>8)&255, i&255)}}
			simulator.Map.Update(vm, []types.PropertyChange{
				{Name: "config.instanceUuid", Val: uuid},
				{Name: "summary.config.instanceUuid", Val: uuid},
				{Name: "config.hardware.numCPU", Val: cpu},
				{Name: "config.hardware.memoryMB", Val: mem},
				{Name: "summary.config.numCpu", Val: cpu},
				{Name: "summary.config.memorySizeMB", Val: mem},
				{Name: "guest.ipAddress", Val: ip},
				{Name: "guest.net", Val: nets},
				{Name: "guest.toolsRunningStatus", Val: string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)},
			})
		})
		if !randomize {
			continue
		}
		if hs := hostsByDC[datacenterOf(vm.Self)]; len(hs) > 1 && h.rng.Intn(2) == 0 {
			if _, err := h.relocate(ctx, vm, hs[h.rng.Intn(len(hs))]); err != nil {
				panic(err)
			}
		}
		if h.rng.Intn(5) == 0 {
			task, err := object.NewVirtualMachine(h.Client, vm.Self).PowerOff(ctx)
			if err == nil {
				_ = task.Wait(ctx)
			}
			h.setTools(vm, string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning))
		}
	}
}

func (h *Harness) setTools(vm *simulator.VirtualMachine, status string) {
	simulator.Map.WithLock(vm, func() {
		simulator.Map.Update(vm, []types.PropertyChange{{Name: "guest.toolsRunningStatus", Val: status}})
	})
}

// shutdownGuest carries out ShutdownGuest for a running guest with tools.
//
// The vSphere API reference (VirtualMachine.ShutdownGuest) says the call
// "returns immediately and does not wait for the guest operating system to
// complete the operation": the guest stops on its own time afterwards. The
// 0.24.2 simulator powers the VM off before answering; with
// -guest-shutdown-ms (or /ctl/guest-shutdown) the answer comes at once and
// the power-off that long after, as a real guest's would. A guest powered
// off meanwhile (a PowerOffVM_Task after a timeout) stays off.
func (h *Harness) shutdownGuest(ctx context.Context, ref types.ManagedObjectReference) error {
	h.mu.Lock()
	delay := h.guestShutdown
	h.mu.Unlock()
	ovm := object.NewVirtualMachine(h.Client, ref)
	if delay <= 0 {
		if err := ovm.ShutdownGuest(ctx); err != nil {
			return err
		}
		if vm := h.vmByRef(ref.Value); vm != nil {
			h.setTools(vm, string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning))
		}
		return nil
	}
	go func() {
		time.Sleep(delay)
		vm := h.vmByRef(ref.Value)
		if vm == nil || vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			return
		}
		if err := ovm.ShutdownGuest(context.Background()); err == nil {
			h.setTools(vm, string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning))
		}
	}()
	return nil
}

// relocate moves vm to host through the API (RelocateVM_Task), naming the
// target's root pool when the compute resource changes, as vCenter needs.
func (h *Harness) relocate(ctx context.Context, vm *simulator.VirtualMachine, host *simulator.HostSystem) (string, error) {
	from := ""
	if vm.Runtime.Host != nil {
		from = vm.Runtime.Host.Value
	}
	oldPool, oldHost := vm.ResourcePool, vm.Runtime.Host
	ref := host.Self
	spec := types.VirtualMachineRelocateSpec{Host: &ref, Pool: poolOf(host)}
	task, err := object.NewVirtualMachine(h.Client, vm.Self).Relocate(ctx, spec, types.VirtualMachineMovePriorityDefaultPriority)
	if err != nil {
		return from, err
	}
	if err := task.Wait(ctx); err != nil {
		return from, err
	}
	// govmomi 0.24.2's RelocateVM_Task sets the VM's resourcePool and
	// runtime.host but leaves the pools' and hosts' `vm` lists as they
	// were, so a container view of a cluster (or host) created afterwards
	// would still walk the VM under its old place. vCenter moves it.
	if oldPool != nil && spec.Pool != nil && *oldPool != *spec.Pool {
		if p, ok := simulator.Map.Get(*oldPool).(*simulator.ResourcePool); ok {
			simulator.Map.RemoveReference(p, &p.Vm, vm.Self)
		}
		if p, ok := simulator.Map.Get(*spec.Pool).(*simulator.ResourcePool); ok {
			simulator.Map.AddReference(p, &p.Vm, vm.Self)
		}
	}
	if oldHost != nil && *oldHost != ref {
		if o, ok := simulator.Map.Get(*oldHost).(*simulator.HostSystem); ok {
			simulator.Map.RemoveReference(o, &o.Vm, vm.Self)
		}
		simulator.Map.AddReference(host, &host.Vm, vm.Self)
	}
	return from, nil
}

// TruthVM is one VM as the simulator holds it.
type TruthVM struct {
	Ref           string   `json:"ref"`
	Name          string   `json:"name"`
	InstanceUUID  string   `json:"instance_uuid"`
	IPAddress     string   `json:"ip_address"`
	NetIPs        []string `json:"net_ips"`
	PowerState    string   `json:"power_state"`
	NumCPU        int32    `json:"num_cpu"`
	MemoryMB      int32    `json:"memory_mb"`
	GuestFullName string   `json:"guest_full_name"`
	ToolsRunning  string   `json:"tools_running_status"`
	Mode          string   `json:"mode"`
}

// TruthHost is one host and the VMs whose runtime.host names it.
type TruthHost struct {
	Ref             string    `json:"ref"`
	Name            string    `json:"name"`
	Datacenter      string    `json:"datacenter"`
	ProductName     string    `json:"product_name"`
	ProductVersion  string    `json:"product_version"`
	ProductBuild    string    `json:"product_build"`
	ConnectionState string    `json:"connection_state"`
	PowerState      string    `json:"power_state"`
	InMaintenance   bool      `json:"in_maintenance"`
	Dark            bool      `json:"dark"`
	VMs             []TruthVM `json:"vms"`
}

// Truth is the ground truth the tests compare against.
type Truth struct {
	Mode  string      `json:"mode"`
	Hosts []TruthHost `json:"hosts"`
}

func (h *Harness) truth() Truth {
	t := Truth{Mode: "esx"}
	if h.VPX {
		t.Mode = "vpx"
	}
	idx := map[string]int{}
	h.mu.Lock()
	dark := map[string]bool{}
	for k, v := range h.dark {
		dark[k] = v
	}
	modes := map[string]string{}
	for k, v := range h.vmMode {
		modes[k] = v
	}
	h.mu.Unlock()
	for _, host := range h.allHosts() {
		th := TruthHost{Ref: host.Self.Value, Datacenter: datacenterOf(host.Self), Dark: dark[host.Self.Value], VMs: []TruthVM{}}
		simulator.Map.WithLock(host, func() {
			th.Name = host.Name
			if p := host.Summary.Config.Product; p != nil {
				th.ProductName, th.ProductVersion, th.ProductBuild = p.Name, p.Version, p.Build
			}
			th.ConnectionState = string(host.Runtime.ConnectionState)
			th.PowerState = string(host.Runtime.PowerState)
			th.InMaintenance = host.Runtime.InMaintenanceMode
		})
		idx[th.Ref] = len(t.Hosts)
		t.Hosts = append(t.Hosts, th)
	}
	for _, vm := range h.allVMs() {
		var tv TruthVM
		var hostRef string
		simulator.Map.WithLock(vm, func() {
			tv = TruthVM{Ref: vm.Self.Value, Name: vm.Name, PowerState: string(vm.Runtime.PowerState), Mode: modes[vm.Self.Value], NetIPs: []string{}}
			if vm.Config != nil {
				tv.InstanceUUID = vm.Config.InstanceUuid
				tv.NumCPU = vm.Config.Hardware.NumCPU
				tv.MemoryMB = vm.Config.Hardware.MemoryMB
				tv.GuestFullName = vm.Config.GuestFullName
			}
			if vm.Guest != nil {
				tv.IPAddress = vm.Guest.IpAddress
				tv.ToolsRunning = vm.Guest.ToolsRunningStatus
				for _, n := range vm.Guest.Net {
					tv.NetIPs = append(tv.NetIPs, n.IpAddress...)
				}
			}
			if vm.Runtime.Host != nil {
				hostRef = vm.Runtime.Host.Value
			}
		})
		if i, ok := idx[hostRef]; ok {
			t.Hosts[i].VMs = append(t.Hosts[i].VMs, tv)
		}
	}
	return t
}
